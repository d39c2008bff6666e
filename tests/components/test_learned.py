"""learned: one trainable vector per position."""

import torch

import transformer_from_scratch as tfs
from transformer_from_scratch.components.learned import Learned


def test_each_position_has_its_own_trainable_row(dims: tfs.Dims) -> None:
    positional = Learned(dims)
    vectors = positional.embed(torch.tensor([2, 5]))
    torch.testing.assert_close(vectors, positional.weight[[2, 5]])
    vectors.sum().backward()
    grad = positional.weight.grad
    assert grad is not None
    assert grad[[2, 5]].abs().sum() > 0
    assert grad[[0, 1, 3, 4]].abs().sum() == 0


def test_adds_nothing_to_scores_or_rotation(dims: tfs.Dims) -> None:
    positional = Learned(dims)
    x = torch.randn(1, 2, 3, 8)
    assert positional.rotate(x, torch.arange(3)) is x
    assert positional.score_bias(torch.arange(3), torch.arange(3)) is None
