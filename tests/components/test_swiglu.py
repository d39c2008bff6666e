"""swiglu and geglu: the gated formulas, and learning XOR."""

import torch

import transformer_from_scratch as tfs
from transformer_from_scratch.components.geglu import GeGLU
from transformer_from_scratch.components.swiglu import SwiGLU
from transformer_from_scratch.conformance.tasks import xor_accuracy


def test_swiglu_is_the_formula(dims: tfs.Dims) -> None:
    mlp = SwiGLU(dims)
    x = torch.randn(2, 3, dims.d_model)
    expected = (torch.nn.functional.silu(x @ mlp.W_gate) * (x @ mlp.W_up)) @ mlp.W_down
    torch.testing.assert_close(mlp(x), expected)
    assert [n for n, _ in mlp.named_parameters()] == ["W_gate", "W_up", "W_down"]


def test_geglu_is_the_formula(dims: tfs.Dims) -> None:
    mlp = GeGLU(dims, approximate="tanh")
    x = torch.randn(2, 3, dims.d_model)
    gate = torch.nn.functional.gelu(x @ mlp.W_gate, approximate="tanh")
    torch.testing.assert_close(mlp(x), (gate * (x @ mlp.W_up)) @ mlp.W_down)


def test_both_learn_xor(dims: tfs.Dims) -> None:
    assert xor_accuracy(SwiGLU(dims), dims.d_model) == 1.0
    assert xor_accuracy(GeGLU(dims), dims.d_model) == 1.0
