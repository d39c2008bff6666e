"""tied: shares the embedding's own Parameter, never a copy."""

import pytest
import torch
from torch import nn

import transformer_from_scratch as tfs
from transformer_from_scratch.components.embedding import Embedding
from transformer_from_scratch.components.tied import Tied


def test_shares_the_embedding_parameter(dims: tfs.Dims) -> None:
    embedding = Embedding(dims)
    unembedding = Tied(dims, embedding)
    assert unembedding.weight is embedding.weight
    x = torch.randn(2, 3, dims.d_model)
    torch.testing.assert_close(unembedding(x), x @ embedding.weight.T)


def test_a_step_on_one_end_moves_the_other(dims: tfs.Dims) -> None:
    embedding = Embedding(dims)
    unembedding = Tied(dims, embedding)
    unembedding(torch.randn(1, 2, dims.d_model)).sum().backward()
    assert embedding.weight.grad is not None and embedding.weight.grad.abs().sum() > 0


def test_refuses_an_embedding_without_a_matching_weight(dims: tfs.Dims) -> None:
    with pytest.raises(tfs.TfsError, match=r"needs an embedding with a `weight` Parameter"):
        Tied(dims, nn.Module())
