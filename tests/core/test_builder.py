"""The builder: specs to decoders, and impossible combinations refused before allocation."""

from collections.abc import Callable

import pytest
import torch
from torch import nn

import transformer_from_scratch as tfs
from transformer_from_scratch.core.registry import Provider

SpecMaker = Callable[..., tfs.DecoderSpec]


def test_builds_a_decoder_from_a_spec(tiny_spec: SpecMaker) -> None:
    decoder = tfs.build_decoder(tiny_spec())
    logits = decoder(torch.randint(0, 11, (3, 5)))
    assert logits.shape == (3, 5, 11)
    assert len(decoder.blocks) == 2


def test_builds_a_preset_by_name() -> None:
    decoder = tfs.build_decoder("tiny")
    assert decoder.spec == tfs.DecoderSpec.preset("tiny")


def test_seed_preset_matches_the_original_architecture() -> None:
    spec = tfs.DecoderSpec.preset("seed")
    assert (spec.d_model, spec.d_vocab, spec.n_ctx, spec.d_head, spec.d_mlp, spec.n_heads) == (
        768, 50257, 1024, 64, 3072, 12,
    )  # fmt: skip
    small = spec.evolve(d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=11, n_ctx=8, n_layers=1)
    decoder = tfs.build_decoder(small)
    assert isinstance(decoder.final_norm, nn.Identity)
    assert decoder.unembedding.weight.shape == (16, 11)
    assert decoder.unembedding.weight is not decoder.embedding.weight
    assert not any("positional" in name for name, _ in decoder.named_parameters())
    assert "positional.table" not in decoder.state_dict()


def test_gpt2_preset_has_124m_parameters() -> None:
    with torch.device("meta"):
        decoder = tfs.build_decoder("gpt2")
    total = sum(decoder.parameter_counts().values())
    assert total == 124_439_808


def test_parameter_counts_count_a_tied_tensor_once(tiny_spec: SpecMaker) -> None:
    decoder = tfs.build_decoder(tiny_spec())
    counts = decoder.parameter_counts()
    unique = {id(p): p.numel() for p in decoder.parameters()}
    assert sum(counts.values()) == sum(unique.values())
    assert "unembedding" not in counts
    assert counts["embedding"] == 11 * 16


class _Recorder(nn.Module):
    calls = 0

    def __init__(self, dims: tfs.Dims) -> None:
        super().__init__()
        type(self).calls += 1


class _BiasOnly(tfs.PositionalEncoding):
    def __init__(self, dims: tfs.Dims) -> None:
        super().__init__()
        _Recorder.calls += 1


class _NoBiasKernel(_Recorder):
    pass


def _registry_with(register: Callable[[tfs.Registry], object]) -> tfs.Registry:
    registry = tfs.load_registry(autoload=False)
    extra = tfs.Registry(Provider("test", "tests", "0"))
    register(extra)
    registry.merge(extra)
    return registry


def test_incompatible_parts_are_refused_before_anything_is_built(tiny_spec: SpecMaker) -> None:
    def register(r: tfs.Registry) -> None:
        r.register("positional", "bias_only", _BiasOnly, capabilities=["score_bias"])
        r.register("attention_kernel", "no_bias", _NoBiasKernel, capabilities=["exact"])

    registry = _registry_with(register)
    _Recorder.calls = 0
    spec = tiny_spec(positional="bias_only", attention_kernel="no_bias")
    with pytest.raises(tfs.IncompatibleComponentsError) as err:
        tfs.build_decoder(spec, registry)
    assert _Recorder.calls == 0
    assert err.value.problems == [
        "components.attention_kernel: positional/bias_only needs the 'score_bias' capability, "
        "which attention_kernel/no_bias does not declare; use an attention_kernel that has it "
        "(flash, materialized, sdpa)"
    ]


def test_a_window_on_a_kernel_that_cannot_honour_it_is_refused(tiny_spec: SpecMaker) -> None:
    registry = _registry_with(lambda r: r.register("attention_kernel", "plain", _NoBiasKernel))
    spec = tiny_spec(attention_kernel={"name": "plain", "options": {"window": 4}})
    with pytest.raises(tfs.IncompatibleComponentsError) as err:
        tfs.build_decoder(spec, registry)
    [problem] = err.value.problems
    assert problem.startswith(
        "components.attention_kernel.options.window: attention_kernel/plain cannot honour a sliding window"
    )
    assert "use a kernel that can (flash, materialized, sdpa) or drop it" in problem


def test_window_option_needs_the_capability(tiny_spec: SpecMaker) -> None:
    class Windowed(nn.Module):
        def __init__(self, dims: tfs.Dims, window: int | None = None) -> None:
            super().__init__()

    registry = _registry_with(lambda r: r.register("attention_kernel", "windowed", Windowed))
    spec = tiny_spec(attention_kernel={"name": "windowed", "options": {"window": 4}})
    with pytest.raises(
        tfs.IncompatibleComponentsError,
        match=r"windowed cannot honour a sliding window.*\(flash, materialized, sdpa\)",
    ):
        tfs.build_decoder(spec, registry)


def test_a_factory_that_returns_no_module_is_named(tiny_spec: SpecMaker) -> None:
    def not_a_module(dims: tfs.Dims) -> int:
        return 3

    registry = _registry_with(lambda r: r.register("mlp", "lambda", not_a_module))  # type: ignore[arg-type]
    with pytest.raises(
        tfs.TfsError, match=r"mlp/lambda \(from tests 0 \(plugin 'test'\)\) returned int"
    ):
        tfs.build_decoder(tiny_spec(mlp="lambda"), registry)


def test_a_positional_must_keep_the_contract(tiny_spec: SpecMaker) -> None:
    registry = _registry_with(lambda r: r.register("positional", "plain", _Recorder))
    with pytest.raises(
        tfs.TfsError, match=r"must subclass transformer_from_scratch\.PositionalEncoding"
    ):
        tfs.build_decoder(tiny_spec(positional="plain"), registry)
