"""gelu: the GELU MLP, its activation against PyTorch's, and learning XOR."""

import pytest
import torch

import transformer_from_scratch as tfs
from transformer_from_scratch.components.gelu import GELU
from transformer_from_scratch.conformance.tasks import xor_accuracy
from transformer_from_scratch.core.functional import gelu


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_activation_matches_pytorch(approximate: str) -> None:
    x = torch.linspace(-6, 6, 101, dtype=torch.float64)
    reference = torch.nn.functional.gelu(x, approximate=approximate)
    torch.testing.assert_close(gelu(x, approximate), reference)


def test_learns_xor(dims: tfs.Dims) -> None:
    assert xor_accuracy(GELU(dims), dims.d_model) == 1.0


def test_without_bias_has_no_bias_parameters(dims: tfs.Dims) -> None:
    names = [name for name, _ in GELU(dims, bias=False).named_parameters()]
    assert names == ["W_in", "W_out"]


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_hand_written_derivative_matches_autograd(approximate: str) -> None:
    x = torch.linspace(-5, 5, 41, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: gelu(t, approximate), (x,))
    (mine,) = torch.autograd.grad(gelu(x, approximate).sum(), x)
    (theirs,) = torch.autograd.grad(torch.nn.functional.gelu(x, approximate=approximate).sum(), x)
    torch.testing.assert_close(mine, theirs)
