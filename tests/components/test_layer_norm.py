"""layer_norm: zero mean and unit variance per position; invariant to shift and scale."""

import torch

import transformer_from_scratch as tfs
from transformer_from_scratch.components.layer_norm import LayerNorm


def test_normalises_each_position(dims: tfs.Dims) -> None:
    out = LayerNorm(dims)(3 + 5 * torch.randn(4, 6, dims.d_model))
    torch.testing.assert_close(out.mean(-1), torch.zeros(4, 6), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(-1, unbiased=False), torch.ones(4, 6), atol=1e-3, rtol=0)


def test_is_invariant_to_shifting_and_scaling_the_input(dims: tfs.Dims) -> None:
    norm = LayerNorm(dims)
    x = torch.randn(2, 3, dims.d_model)
    torch.testing.assert_close(norm(x * 7.0 + 2.5), norm(x), atol=1e-5, rtol=1e-4)


def test_matches_pytorch_with_its_epsilon(dims: tfs.Dims) -> None:
    norm = LayerNorm(dims, eps=1e-3)
    with torch.no_grad():
        norm.weight.normal_()
        assert norm.bias is not None
        norm.bias.normal_()
    x = torch.randn(2, 3, dims.d_model) * 0.01
    reference = torch.nn.functional.layer_norm(x, (dims.d_model,), norm.weight, norm.bias, 1e-3)
    torch.testing.assert_close(norm(x), reference)
    with torch.no_grad():  # inference skips the autograd bookkeeping: the same numbers
        torch.testing.assert_close(norm(x), reference)


def test_hand_written_derivative_passes_gradcheck(dims: tfs.Dims) -> None:
    from transformer_from_scratch.core.functional import layer_normalize

    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, w, b: layer_normalize(a, w, b, 1e-5), (x, weight, bias)
    )
    assert torch.autograd.gradcheck(lambda a, w: layer_normalize(a, w, None, 1e-5), (x, weight))


def test_gradients_match_pytorch_for_every_input_weight_and_bias() -> None:
    from transformer_from_scratch.core.functional import layer_normalize

    x = (torch.randn(2, 3, 16, dtype=torch.float64) * 4 + 2).requires_grad_()
    weight = torch.randn(16, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(16, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2, 3, 16, dtype=torch.float64)
    mine = torch.autograd.grad(layer_normalize(x, weight, bias, 1e-5), (x, weight, bias), grad)
    reference = torch.nn.functional.layer_norm(x, (16,), weight, bias, 1e-5)
    theirs = torch.autograd.grad(reference, (x, weight, bias), grad)
    for name, a, b in zip(("input", "weight", "bias"), mine, theirs, strict=True):
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-9), f"the {name} gradients differ"


def test_half_precision_input_with_float32_parameters_trains() -> None:
    """Mixed precision: bfloat16 activations meet float32 gain and bias (autocast's layout)."""
    from transformer_from_scratch.core.functional import layer_normalize

    x = torch.randn(2, 3, 8, dtype=torch.bfloat16, requires_grad=True)
    weight, bias = torch.randn(8, requires_grad=True), torch.randn(8, requires_grad=True)
    layer_normalize(x, weight, bias, 1e-5).sum().backward()
    reference = x.detach().float().requires_grad_()
    torch.nn.functional.layer_norm(reference, (8,), weight.detach(), bias.detach()).sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.bfloat16
    torch.testing.assert_close(x.grad.float(), reference.grad, atol=0.05, rtol=0.05)
