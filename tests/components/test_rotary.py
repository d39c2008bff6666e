"""rotary: rotation by position, relative scores, partial rotation, and its option checks."""

import attrs
import torch

import transformer_from_scratch as tfs
from transformer_from_scratch.components.rotary import Rotary, validate


def test_position_zero_is_the_identity(dims: tfs.Dims) -> None:
    x = torch.randn(1, 2, 1, dims.d_head)
    torch.testing.assert_close(Rotary(dims).rotate(x, torch.tensor([0])), x)


def test_rotation_keeps_the_length_of_each_vector(dims: tfs.Dims) -> None:
    x = torch.randn(1, 2, 5, dims.d_head)
    turned = Rotary(dims).rotate(x, torch.arange(5))
    torch.testing.assert_close(turned.norm(dim=-1), x.norm(dim=-1))


def test_scores_depend_only_on_the_offset(dims: tfs.Dims) -> None:
    rotary = Rotary(dims)
    q, k = torch.randn(1, 1, 1, dims.d_head), torch.randn(1, 1, 1, dims.d_head)

    def score(m: int, n: int) -> torch.Tensor:
        return (rotary.rotate(q, torch.tensor([m])) * rotary.rotate(k, torch.tensor([n]))).sum()

    torch.testing.assert_close(score(7, 3), score(11, 7))


def test_a_fraction_rotates_only_the_first_features(dims: tfs.Dims) -> None:
    rotary = Rotary(dims, fraction=0.5)
    x = torch.randn(1, 1, 3, dims.d_head)
    turned = rotary.rotate(x, torch.arange(3))
    torch.testing.assert_close(turned[..., 4:], x[..., 4:])
    assert not torch.allclose(turned[..., 1:, :4], x[..., 1:, :4])


def test_a_fraction_giving_an_odd_width_is_refused(dims: tfs.Dims) -> None:
    dims = attrs.evolve(dims, d_head=12)
    [problem] = validate(dims, {"fraction": 0.25})
    assert "rotates 3 of d_head = 12 features, but features rotate in pairs" in problem
    assert validate(dims, {"fraction": 0.5}) == []
