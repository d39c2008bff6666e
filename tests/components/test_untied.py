"""untied: its own [d_model d_vocab] weight."""

import torch

import transformer_from_scratch as tfs
from transformer_from_scratch.components.embedding import Embedding
from transformer_from_scratch.components.untied import Untied


def test_has_its_own_weight_and_computes_logits(dims: tfs.Dims) -> None:
    embedding = Embedding(dims)
    unembedding = Untied(dims, embedding)
    assert unembedding.weight.shape == (dims.d_model, dims.d_vocab)
    x = torch.randn(2, 3, dims.d_model)
    torch.testing.assert_close(unembedding(x), x @ unembedding.weight)
