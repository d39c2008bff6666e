"""Generating 64 tokens with and without the key-value cache."""

import attrs
import pytest
import torch

import transformer_from_scratch as tfs
from transformer_from_scratch.generation.generate import GenerationConfig, generate


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
def test_generate_64(benchmark, use_cache: bool) -> None:  # type: ignore[no-untyped-def]
    spec = attrs.evolve(tfs.DecoderSpec.preset("small"), n_ctx=256)
    torch.manual_seed(0)
    decoder = tfs.build_decoder(spec).eval()
    config = GenerationConfig(max_new_tokens=64, temperature=0, use_cache=use_cache)
    tokens = benchmark(lambda: list(generate(decoder, [0], config)))
    assert len(tokens) == 64
