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


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_is_computed_right_across_the_pieces_it_works_in(
    approximate: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a CPU the activation runs over pieces of its input (so each stays in cache): values
    and gradients must not depend on where the pieces end, for any layout of the input."""
    import transformer_from_scratch.core.functional as functional

    monkeypatch.setattr(functional, "_PIECE_BYTES", 7 * 8)  # 7 float64s: pieces end mid-row
    base = torch.randn(5, 12, dtype=torch.float64) * 3
    x = base[:, ::2].requires_grad_()  # not contiguous; 30 elements: 4 pieces and a part
    grad = torch.randn(6, 5, dtype=torch.float64).t()  # not contiguous either
    (mine,) = torch.autograd.grad(gelu(x, approximate), x, grad)
    reference = torch.nn.functional.gelu(x, approximate=approximate)
    (theirs,) = torch.autograd.grad(reference, x, grad)
    torch.testing.assert_close(gelu(x, approximate), reference)
    torch.testing.assert_close(mine, theirs)
    with torch.no_grad():  # the inference path (no autograd bookkeeping) works in pieces too
        torch.testing.assert_close(gelu(x, approximate), reference)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gradients_of_a_batch_in_one_piece_match_pytorch(approximate: str) -> None:
    x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)  # small: one piece
    grad = torch.randn(2, 3, 8, dtype=torch.float64)
    (mine,) = torch.autograd.grad(gelu(x, approximate), x, grad)
    (theirs,) = torch.autograd.grad(torch.nn.functional.gelu(x, approximate=approximate), x, grad)
    torch.testing.assert_close(mine, theirs)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gradients_stay_finite_for_huge_inputs_where_pytorchs_do(approximate: str) -> None:
    """A diverging run feeds huge numbers through: the slope must be 0 or 1 there, not
    ``inf * 0`` (x^3 overflows float32 from |x| ~ 1e13 while ``s (1 - s)`` is already 0)."""
    x = torch.tensor([-1e18, -1e15, -1e10, -50.0, 50.0, 1e10, 1e15, 1e18], requires_grad=True)
    (mine,) = torch.autograd.grad(gelu(x, approximate).sum(), x)
    reference = torch.nn.functional.gelu(x, approximate=approximate)
    (theirs,) = torch.autograd.grad(reference.sum(), x)
    torch.testing.assert_close(mine, theirs)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_keeps_only_its_input_for_the_backward_pass(approximate: str) -> None:
    """As PyTorch's own GELU: the gate is computed again where the gradient needs it, so a
    layer's activations take no second tensor of the MLP's width."""
    x = torch.randn(4, 8, 32, requires_grad=True)
    saved = gelu(x, approximate).grad_fn.saved_tensors
    assert [t.data_ptr() for t in saved] == [x.data_ptr()]
