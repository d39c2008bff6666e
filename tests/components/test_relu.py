"""relu: the 2017 feed-forward network learns a function no linear map can."""

import torch

import transformer_from_scratch as tfs
from transformer_from_scratch.components.relu import ReLU
from transformer_from_scratch.conformance.tasks import xor_accuracy


def test_learns_xor(dims: tfs.Dims) -> None:
    assert xor_accuracy(ReLU(dims, init="seed"), dims.d_model) == 1.0


def test_is_the_formula(dims: tfs.Dims) -> None:
    mlp = ReLU(dims)
    x = torch.randn(2, 3, dims.d_model)
    assert mlp.b_in is not None and mlp.b_out is not None
    expected = torch.relu(x @ mlp.W_in + mlp.b_in) @ mlp.W_out + mlp.b_out
    torch.testing.assert_close(mlp(x), expected)


def test_seed_init_has_zero_biases(dims: tfs.Dims) -> None:
    mlp = ReLU(dims, init="seed")
    assert mlp.b_in is not None and not mlp.b_in.any()
