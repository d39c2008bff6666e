"""Export to Hugging Face: ``transformers`` loads the folder offline and computes the same logits;
``from_hf(to_hf(decoder))`` gives the decoder back exactly; a spec with a part no family has is
refused by name."""

from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

import transformer_from_scratch as tfs
from tests.interop.test_huggingface import CONFIGS, VOCAB, reference
from transformer_from_scratch.interop import from_hf
from transformer_from_scratch.interop.hf_export import save_hf, to_hf

TOKENS = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(3))


def _randomised(spec: tfs.DecoderSpec) -> tfs.Decoder:
    """A decoder with every weight random (gains and biases too), so no mapping hides; large
    enough that attention is sharp and a wrong rotary base or window changes the logits."""
    decoder = tfs.build_decoder(spec)
    with torch.no_grad():
        for param in decoder.parameters():
            param.normal_(1.0 if param.dim() == 1 else 0.0, 0.3)
    return decoder.eval()


def _spec(**parts: Any) -> tfs.DecoderSpec:
    sizes = {"d_model": 32, "n_layers": 2, "n_heads": 4, "d_head": 8, "d_mlp": 48,
             "d_vocab": VOCAB, "n_ctx": 48}  # fmt: skip
    return tfs.DecoderSpec.from_dict({**sizes, **parts})


NATIVE = {  # specs made here (not converted from transformers), one per family and shape
    "gpt2-tanh": _spec(components={"attention": {"name": "multi_head", "options": {"bias": True}},
                                   "mlp": {"name": "gelu", "options": {"approximate": "tanh"}}}),
    "llama-untied-theta": _spec(n_kv_heads=2, components={
        "positional": {"name": "rotary", "options": {"base": 500.0}}, "mlp": "swiglu",
        "norm": {"name": "rms_norm", "options": {"eps": 1e-5}}, "unembedding": "untied"}),
    "llama-head-dim": _spec(d_head=12, components={"positional": "rotary", "mlp": "swiglu",
                                                  "norm": "rms_norm"}),
    "mistral-window-flash": _spec(n_kv_heads=1, components={
        "positional": "rotary", "mlp": "swiglu", "norm": "rms_norm",
        "attention_kernel": {"name": "flash", "options": {"window": 6, "tile": 4}}}),
    "neox-parallel-partial": _spec(components={
        "positional": {"name": "rotary", "options": {"fraction": 0.5, "base": 2000.0}},
        "attention": {"name": "multi_head", "options": {"bias": True}}, "block": "parallel",
        "unembedding": "untied"}),
}  # fmt: skip


def _through_transformers(decoder: tfs.Decoder, folder: Path) -> torch.Tensor:
    save_hf(decoder, folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager")
    with torch.no_grad():
        logits: torch.Tensor = model.eval()(TOKENS).logits
    return logits


@pytest.mark.parametrize("name", NATIVE)
def test_transformers_loads_the_export_and_computes_the_same_logits(
    name: str, tmp_path: Path
) -> None:
    decoder = _randomised(NATIVE[name])
    with torch.no_grad():
        expected = decoder(TOKENS)
    torch.testing.assert_close(_through_transformers(decoder, tmp_path), expected,
                               atol=1e-4, rtol=1e-4)  # fmt: skip


@pytest.mark.parametrize("name", CONFIGS)
def test_a_converted_model_goes_back_exactly(name: str, tmp_path: Path) -> None:
    ours = from_hf(reference(name))
    config, _ = to_hf(ours)
    again = from_hf(transformers.AutoModelForCausalLM.from_pretrained(
        save_hf(ours, tmp_path), attn_implementation="eager"))  # fmt: skip
    assert again.spec == ours.spec
    for key, tensor in ours.state_dict().items():
        assert torch.equal(again.state_dict()[key], tensor), key
    assert config["model_type"] == name.split("-")[0]


REFUSED = {
    "alibi": (_spec(components={"positional": "alibi"}), "positional 'alibi' has no equivalent"),
    "qk_norm": (_spec(components={"positional": "rotary", "mlp": "swiglu", "norm": "rms_norm",
                "attention": {"name": "multi_head", "options": {"qk_norm": True}}}),
                "attention 'multi_head' option qk_norm=True has no equivalent in Llama"),
    "post_norm": (_spec(components={"block": "post_norm"}), "block 'post_norm' has no equivalent"),
    "no final norm": (_spec(final_norm=False), "without a final norm has no equivalent"),
    "linear attention": (_spec(components={"attention_kernel": "linear"}),
                         "attention_kernel 'linear' has no equivalent"),
}  # fmt: skip


@pytest.mark.parametrize("name", REFUSED)
def test_a_spec_no_family_has_is_refused_naming_the_part(name: str, tmp_path: Path) -> None:
    spec, message = REFUSED[name]
    with pytest.raises(tfs.TfsError, match=message):
        save_hf(tfs.build_decoder(spec), tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_a_folder_that_is_not_empty_is_never_written_into(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(tfs.TfsError, match="is not empty; nothing was written"):
        save_hf(tfs.build_decoder(NATIVE["gpt2-tanh"]), tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
