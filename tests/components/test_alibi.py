"""alibi: the paper's slopes and a bias linear in distance."""

import attrs
import torch

import transformer_from_scratch as tfs
from transformer_from_scratch.components.alibi import ALiBi, alibi_slopes


def test_slopes_for_eight_heads_are_the_papers() -> None:
    assert alibi_slopes(8) == [2 ** -(i + 1) for i in range(8)]


def test_slopes_for_a_count_that_is_not_a_power_of_two() -> None:
    slopes = alibi_slopes(6)
    assert slopes[:4] == alibi_slopes(4)
    assert slopes[4:] == [2**-1, 2**-3]


def test_the_bias_is_minus_slope_times_distance(dims: tfs.Dims) -> None:
    alibi = ALiBi(attrs.evolve(dims, n_heads=2))
    bias = alibi.score_bias(torch.tensor([3]), torch.arange(4))
    distance = torch.tensor([3.0, 2.0, 1.0, 0.0])
    assert alibi_slopes(2) == [2**-4, 2**-8]
    torch.testing.assert_close(bias, -torch.stack([distance / 16, distance / 256])[:, None, :])
    assert alibi.embed(torch.arange(3)) is None
