"""Per-layer overrides: chosen blocks get other components, validated and round-tripped."""

from collections.abc import Callable

import pytest
import torch

import transformer_from_scratch as tfs

SpecMaker = Callable[..., tfs.DecoderSpec]

ALTERNATING = [{"every": 2, "attention_kernel": {"name": "materialized", "options": {"window": 2}}}]


def test_every_other_block_gets_a_sliding_window(tiny_spec: SpecMaker) -> None:
    spec = tiny_spec(n_layers=4, layers=ALTERNATING)
    decoder = tfs.build_decoder(spec)
    windows = [block.attention.kernel.window for block in decoder.blocks]
    assert windows == [2, None, 2, None]


def test_overrides_round_trip_through_toml_and_json(tiny_spec: SpecMaker) -> None:
    spec = tiny_spec(
        n_layers=4,
        layers=[
            *ALTERNATING,
            {"indices": [3], "mlp": "relu"},
            {"every": 2, "offset": 1, "norm": "rms_norm"},
        ],
    )
    assert tfs.DecoderSpec.from_toml(spec.to_toml()) == spec
    assert tfs.DecoderSpec.from_json(spec.to_json()) == spec
    assert "[[layers]]\nevery = 2" in spec.to_toml()
    names = [(c.mlp.name, c.norm.name) for c in (spec.components_for(i) for i in range(4))]
    assert names == [
        ("gelu", "layer_norm"),
        ("gelu", "rms_norm"),
        ("gelu", "layer_norm"),
        ("relu", "rms_norm"),
    ]


def test_override_problems_are_reported_with_their_paths(tiny_spec: SpecMaker) -> None:
    bad = tiny_spec().to_dict()
    bad["layers"] = [
        {"indices": [5], "mlp": "relu"},
        {"every": 2, "indices": [0], "mpl": "relu"},
        {"every": 0, "mlp": "relu"},
        {"indices": [0]},
    ]
    with pytest.raises(tfs.SpecError) as err:
        tfs.DecoderSpec.from_dict(bad)
    problems = err.value.problems
    assert "layers[0].indices: [5] out of range; blocks are numbered 0..1" in problems
    assert any(p.startswith("layers[1].mpl: unknown field; did you mean 'mlp'?") for p in problems)
    assert (
        "layers[1]: give exactly one of `indices = [...]` or `every = N` to choose blocks"
        in problems
    )
    assert "layers[2].every: must be a positive whole number, got 0" in problems
    assert any(p.startswith("layers[3]: overrides nothing") for p in problems)


def test_overridden_components_are_checked_against_the_registry(tiny_spec: SpecMaker) -> None:
    spec = tiny_spec(
        layers=[{"indices": [1], "attention_kernel": {"name": "linear", "options": {"window": 4}}}]
    )
    with pytest.raises(
        tfs.IncompatibleComponentsError,
        match=r"layer 1.attention_kernel.options.window: attention_kernel/linear cannot honour a sliding window",
    ):
        tfs.build_decoder(spec)


def test_a_mixed_stack_stays_causal_and_caches(tiny_spec: SpecMaker) -> None:
    spec = tiny_spec(
        n_layers=3, layers=[{"indices": [1], "attention_kernel": "flash", "block": "parallel"}]
    )
    decoder = tfs.build_decoder(spec).eval()
    tokens = torch.randint(0, 11, (1, 8))
    cache = decoder.new_cache()
    steps = torch.cat([decoder(tokens[:, i : i + 1], cache=cache) for i in range(8)], dim=1)
    torch.testing.assert_close(steps, decoder(tokens), atol=1e-5, rtol=1e-4)
