"""none: every part of the positional contract is neutral."""

import torch

import transformer_from_scratch as tfs
from transformer_from_scratch.components.none import NoPositions


def test_is_neutral_everywhere(dims: tfs.Dims) -> None:
    positional = NoPositions(dims)
    x = torch.randn(1, 2, 3, 8)
    assert positional.embed(torch.arange(3)) is None
    assert positional.rotate(x, torch.arange(3)) is x
    assert positional.score_bias(torch.arange(3), torch.arange(3)) is None
    assert list(positional.parameters()) == []
