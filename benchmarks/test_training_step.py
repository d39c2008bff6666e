"""One optimiser step per preset family (shrunk to laptop size), and the plain-PyTorch reference."""

import pytest
import torch

import transformer_from_scratch as tfs
from transformer_from_scratch.bench.reference import ReferenceGPT
from transformer_from_scratch.bench.train import _step_fn

SHRINK = {
    "d_model": 128,
    "n_layers": 2,
    "n_heads": 4,
    "d_head": 32,
    "d_mlp": 512,
    "d_vocab": 256,
    "n_ctx": 128,
}
FAMILIES = ["seed", "gpt2", "llama", "mistral", "gpt_neox"]


def _spec(preset: str) -> tfs.DecoderSpec:
    spec = tfs.DecoderSpec.preset(preset)
    kv = 2 if spec.n_kv_heads else None
    return spec.evolve(**SHRINK, n_kv_heads=kv)


@pytest.mark.parametrize("preset", FAMILIES)
def test_step(benchmark, preset: str) -> None:  # type: ignore[no-untyped-def]
    spec = _spec(preset)
    tokens = torch.randint(0, spec.d_vocab, (8, spec.n_ctx + 1))
    benchmark(_step_fn(tfs.build_decoder(spec), tokens, torch.float32))


def test_step_reference_gpt(benchmark) -> None:  # type: ignore[no-untyped-def]
    spec = _spec("gpt2")
    tokens = torch.randint(0, spec.d_vocab, (8, spec.n_ctx + 1))
    benchmark(_step_fn(ReferenceGPT(spec), tokens, torch.float32))
