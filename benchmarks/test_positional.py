"""Every registered positional encoding: what it adds to a forward pass of one attention layer."""

import pytest
import torch

import transformer_from_scratch as tfs
from transformer_from_scratch import default_registry

POSITIONAL = default_registry().names("positional")


@pytest.mark.parametrize("positional", POSITIONAL)
def test_attention_layer_with(benchmark, positional: str) -> None:  # type: ignore[no-untyped-def]
    spec = tfs.DecoderSpec.preset("small").evolve(positional=positional, n_layers=1)
    decoder = tfs.build_decoder(spec).eval()
    tokens = torch.randint(0, spec.d_vocab, (8, spec.n_ctx))
    with torch.no_grad():
        logits = benchmark(decoder, tokens)
    assert logits.shape == (8, spec.n_ctx, spec.d_vocab)
