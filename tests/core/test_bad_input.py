"""Bad input gets one clear error naming what, where and how to fix it (issue 10, items 7-14)."""

import json
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load as read_safetensors
from torch import nn

import transformer_from_scratch as tfs
from tests.conftest import DistMaker
from transformer_from_scratch.core.builder import count_parameters
from transformer_from_scratch.core.checkpoint import FORMAT, save_decoder, serialise
from transformer_from_scratch.core.registry import Provider
from transformer_from_scratch.generation.generate import GenerationConfig, generate
from transformer_from_scratch.training.data import load_corpus, make_tokenizer


def tiny(**changes: Any) -> tfs.DecoderSpec:
    return tfs.DecoderSpec.preset("tiny").evolve(**changes)


# --- specs -------------------------------------------------------------------------------


def test_every_problem_of_a_spec_is_reported_at_once() -> None:
    spec = tiny(mlp="gelux", positional="alibi", attention_kernel="linear",
                norm={"name": "layer_norm", "options": {"eps": float("nan")}})  # fmt: skip
    with pytest.raises(tfs.SpecError) as caught:
        tfs.build_decoder(spec)
    text = str(caught.value)
    assert len(caught.value.problems) == 3, text
    assert "unknown mlp 'gelux'" in text and "eps = nan must be a finite number" in text
    assert "positional/alibi needs the 'score_bias' capability" in text


@pytest.mark.parametrize(
    ("kind", "name", "option", "value", "says"),
    [("norm", "layer_norm", "eps", float("nan"), "must be a finite number"),
     ("norm", "rms_norm", "eps", 0.0, "must be above 0"),
     ("positional", "learned", "std", -1.0, "must be above 0"),
     ("positional", "rotary", "base", float("inf"), "must be a finite number"),
     ("attention_kernel", "materialized", "window", 0, "must be above 0"),
     ("attention_kernel", "materialized", "block", 0, "must be above 0"),
     ("attention_kernel", "flash", "tile", "big", "must be a whole number or none"),
     ("mlp", "gelu", "bias", 1, "must be true or false")],
)  # fmt: skip
def test_option_values_are_checked_with_the_field_and_the_range(
    kind: str, name: str, option: str, value: Any, says: str
) -> None:
    with pytest.raises(tfs.SpecError, match=rf"components\.{kind}\.options\.{option}: .*{says}"):
        tfs.build_decoder(tiny(**{kind: {"name": name, "options": {option: value}}}))


class _Scaled(nn.Module):
    """A plugin's MLP with a float option of its own."""

    def __init__(self, dims: tfs.Dims, gain: float = 1.0) -> None:
        super().__init__()
        self.gain = gain

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        return residual * self.gain


def _with(kind: str, name: str, factory: Any) -> tfs.Registry:
    registry = tfs.load_registry(autoload=False)
    extra = tfs.Registry(Provider("mine", "tfs-mine", "1.0"))
    extra.register(kind, name, factory)
    registry.merge(extra)
    return registry


def test_a_plugins_float_option_is_checked_from_its_signature() -> None:
    registry = _with("mlp", "scaled", _Scaled)
    spec = tiny(mlp={"name": "scaled", "options": {"gain": float("nan")}})
    with pytest.raises(tfs.SpecError, match=r"mlp/scaled option gain = nan must be a finite"):
        tfs.build_decoder(spec, registry)


def test_duplicate_json_keys_are_refused_and_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    text = tiny().to_json()
    doubled = text.replace('"d_model": 32,', '"d_model": 32,\n  "d_model": 64,')
    assert doubled != text
    with pytest.raises(tfs.SpecError, match=r"key 'd_model' appears twice .*\(32, then 64\)"):
        tfs.DecoderSpec.from_json(doubled)
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert tfs.load_spec(path) == tiny()


def test_a_spec_from_a_newer_version_is_refused_naming_both() -> None:
    data = tiny().to_dict()
    assert data["spec_version"] == 1
    assert tfs.DecoderSpec.from_dict(data) == tiny()
    with pytest.raises(tfs.SpecError, match=r"version 7, but this .* reads versions up to 1"):
        tfs.DecoderSpec.from_dict({**data, "spec_version": 7})


# --- sizes and memory ----------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["tiny", "small", "gpt2"])
def test_parameters_are_counted_exactly_without_allocating(preset: str) -> None:
    spec = tfs.DecoderSpec.preset(preset)
    with torch.device("meta"):
        built = sum(p.numel() for p in tfs.build_decoder(spec).parameters())
    count = count_parameters(spec)
    assert count is not None and count.total == built


def test_per_layer_overrides_are_counted() -> None:
    spec = tiny(n_layers=4, layers=[{"every": 2, "mlp": "swiglu"}])
    with torch.device("meta"):
        built = sum(p.numel() for p in tfs.build_decoder(spec).parameters())
    assert count_parameters(spec).total == built


@pytest.mark.parametrize(
    ("changes", "says"),
    [({"n_layers": 10**9}, r"cannot be built: n_layers = 1,000,000,000"),
     ({"n_layers": 100_000, "d_mlp": 100_000}, r"needs about .* GiB but .* available, so nothing was allocated"),
     ({"d_vocab": 10**9}, r"(?s)nothing was allocated.*Not even one layer fits")],
)  # fmt: skip
def test_a_spec_too_big_for_the_machine_is_refused_at_once(
    changes: dict[str, int], says: str
) -> None:
    # Refused from the sizes alone: building first would hang or exhaust memory here.
    with pytest.raises(tfs.TfsError, match=says) as caught:
        tfs.build_decoder(tfs.DecoderSpec.preset("small").evolve(**changes))
    assert "Traceback" not in str(caught.value)


# --- the dry run --------------------------------------------------------------------------


class _WrongWidth(nn.Module):
    """An MLP that forgets to project back to d_model."""

    def __init__(self, dims: tfs.Dims) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(dims.d_model, dims.d_mlp))

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        return residual @ self.w


class _Crashes(_WrongWidth):
    """An MLP whose forward pass raises."""

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        return residual @ self.w.T


def test_a_part_with_the_wrong_output_shape_is_named_when_the_decoder_is_built() -> None:
    registry = _with("mlp", "wrong_width", _WrongWidth)
    with pytest.raises(tfs.ComponentError,
                       match=r"mlp/wrong_width \(from tfs-mine 1.0 .*\) returned \(1, 2, \d+\) "
                       r"where the mlp contract promises \(1, 2, 32\)"):  # fmt: skip
        tfs.build_decoder(tiny(mlp="wrong_width"), registry)


def test_a_part_that_crashes_is_named_when_the_decoder_is_built() -> None:
    registry = _with("mlp", "crashes", _Crashes)
    with pytest.raises(tfs.ComponentError, match=r"failed in mlp/crashes \(from tfs-mine"):
        tfs.build_decoder(tiny(mlp="crashes"), registry)


# --- tokens, text, generation ---------------------------------------------------------------


def test_token_ids_outside_the_vocabulary_are_named() -> None:
    decoder = tfs.build_decoder(tiny())
    vocab = decoder.spec.d_vocab
    with pytest.raises(tfs.TfsError, match=rf"token id {vocab} at \(sample, position\) \(0, 1\)"):
        decoder(torch.tensor([[1, vocab, 2]]))
    with pytest.raises(tfs.TfsError, match=r"token id -1 .* ids run 0\.\."):
        list(generate(decoder, [3, -1], GenerationConfig(max_new_tokens=1)))


def test_the_split_never_cuts_a_utf8_character(tmp_path: Path) -> None:
    path = tmp_path / "text.txt"
    for pad in range(4):  # move the 90% mark across every byte of a multi-byte character
        path.write_text("a" * pad + "é€😀" * 30, encoding="utf-8")
        corpus = load_corpus(path)
        assert make_tokenizer("char", corpus).vocab_size > 1
        for doc in corpus.train + corpus.validation:
            doc.data.decode("utf-8")


def test_generation_options_name_the_field_and_range() -> None:
    with pytest.raises(tfs.TfsError, match=r"temperature = nan must be 0 \(greedy\) or more"):
        GenerationConfig(temperature=float("nan"))
    with pytest.raises(tfs.TfsError, match=r"top_p = nan must be above 0 and at most 1"):
        GenerationConfig(top_p=float("nan"))


def test_the_readmes_python_api_is_exported() -> None:
    assert tfs.load_decoder is not None and tfs.save_decoder is not None
    assert tfs.load_checkpoint is not None


# --- checkpoints ----------------------------------------------------------------------------


def _rewrite(path: Path, change_tensors: Any = None, change_metadata: Any = None) -> None:
    """Re-sign a checkpoint after a change, as a careful forger would (digest recomputed)."""
    blob = path.read_bytes()
    (length,) = struct.unpack("<Q", blob[:8])
    metadata = json.loads(blob[8 : 8 + length])["__metadata__"]
    tensors = read_safetensors(blob)
    tensors = change_tensors(tensors) if change_tensors else tensors
    metadata = change_metadata(metadata) if change_metadata else metadata
    path.write_bytes(serialise(tensors, {k: v for k, v in metadata.items() if k != "digest"}))


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return save_decoder(tfs.build_decoder(tiny()), tmp_path / "model.safetensors")


@pytest.mark.parametrize(
    ("tensors", "metadata", "says"),
    [(None, lambda m: {**m, "aliases": "{not json"}, r"metadata field 'aliases' is not valid JSON"),
     (None, lambda m: {**m, "tokenizer": "[1, 2]"}, r"field 'tokenizer' should hold a JSON object"),
     (None, lambda m: {**m, "aliases": json.dumps({**json.loads(m["aliases"]), "x": "y"})},
      r"field 'aliases' names tensors it lacks: x -> y"),
     (lambda t: {k: v.double() for k, v in t.items()}, None, r"torch\.float64, the model needs .*torch\.float32"),
     (lambda t: {k: v[:1] for k, v in t.items()}, None, r"is \(1, \d+, \d+\) .* the model needs"),
     (lambda t: {k: v.fill_(float("nan")) for k, v in t.items()}, None, r"NaN or infinite weights"),
     (lambda t: {f"x{i}": torch.zeros(1) for i in range(9)}, None, r"missing .* and \d+ more")],
)  # fmt: skip
def test_damaged_or_mismatched_checkpoints_name_the_file_and_field(
    checkpoint: Path, tensors: Any, metadata: Any, says: str
) -> None:
    _rewrite(checkpoint, tensors, metadata)
    with pytest.raises(tfs.CheckpointError, match=says) as caught:
        tfs.load_decoder(checkpoint)
    assert str(checkpoint) in str(caught.value)


def test_an_oversized_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 10**15) + b"{}" * 10)
    with pytest.raises(tfs.CheckpointError, match=r"declares a header of 1,000,000,000,000,000"):
        tfs.load_decoder(path)


def test_a_distribution_name_from_a_checkpoint_is_never_put_in_a_command(
    checkpoint: Path,
) -> None:
    def evil(metadata: dict[str, str]) -> dict[str, str]:
        spec = json.loads(metadata["spec"])
        spec["components"]["mlp"] = {"name": "fancy", "options": {}}
        providers = {"mlp/fancy": {"distribution": "x; rm -rf ~", "version": "1"}}
        return {**metadata, "spec": json.dumps(spec), "providers": json.dumps(providers)}

    _rewrite(checkpoint, None, evil)
    with pytest.raises(tfs.CheckpointError) as caught:
        tfs.load_decoder(checkpoint)
    assert "rm -rf" not in str(caught.value) and "pip install" not in str(caught.value)
    assert "does not name validly" in str(caught.value)
    assert FORMAT


# --- plugins --------------------------------------------------------------------------------

INTERRUPTS = "raise KeyboardInterrupt"
GOOD = """
from transformer_from_scratch import hookimpl
from transformer_from_scratch.components.gelu import GELU

@hookimpl
def register_components(registry):
    registry.register("mlp", "{name}", GELU)
"""


def test_a_plugin_raising_keyboard_interrupt_at_import_does_not_stop_the_others(
    make_distribution: DistMaker,
) -> None:
    make_distribution("tfs-a-interrupts", {"tfs_a": INTERRUPTS}, {"a_first": "tfs_a"})
    make_distribution("tfs-b-good", {"tfs_b": GOOD.format(name="b_gelu")}, {"b_second": "tfs_b"})
    with pytest.warns(UserWarning, match="KeyboardInterrupt"):
        registry = tfs.load_registry(autoload=True, strict=False)
    assert "b_gelu" in registry.names("mlp")
    assert any("KeyboardInterrupt" in f.error for f in registry.failures)


def test_two_distributions_with_one_entry_point_name_are_reported(
    make_distribution: DistMaker,
) -> None:
    make_distribution("tfs-one", {"tfs_one": GOOD.format(name="one_gelu")}, {"same": "tfs_one"})
    make_distribution("tfs-two", {"tfs_two": GOOD.format(name="two_gelu")}, {"same": "tfs_two"})
    with pytest.warns(UserWarning, match=r"entry point name 'same' is exposed by 2"):
        registry = tfs.load_registry(autoload=True, strict=False)
    assert {"one_gelu", "two_gelu"} <= set(registry.names("mlp"))


def test_a_suggestion_names_the_distribution_that_provides_it() -> None:
    registry = _with("mlp", "scaled", _Scaled)
    with pytest.raises(tfs.SpecError, match=r"did you mean 'scaled' \(from tfs-mine\)\?"):
        tfs.build_decoder(tiny(mlp="scaleb"), registry)


def test_a_missing_plugin_in_a_per_layer_override_is_named_with_the_checkpoint(
    tmp_path: Path,
) -> None:
    registry = _with("mlp", "scaled", _Scaled)
    spec = tiny(n_layers=2, layers=[{"indices": [1], "mlp": "scaled"}])
    path = save_decoder(tfs.build_decoder(spec, registry), tmp_path / "model.safetensors")
    with pytest.raises(tfs.CheckpointError) as caught:
        tfs.load_decoder(path, tfs.load_registry(autoload=False))
    message = str(caught.value)
    assert str(path) in message and "mlp 'scaled' (layer 1)" in message
    assert "pip install tfs-mine" in message
