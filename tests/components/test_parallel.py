"""parallel: x + Attention(Norm(x)) + MLP(Norm(x)), both reading the same input."""

import torch

import transformer_from_scratch as tfs
from tests.components.blocks import Doubling, Halving, PlusOne, run_block
from transformer_from_scratch.components.parallel import Parallel


def test_both_sublayers_read_the_same_normalised_input(dims: tfs.Dims) -> None:
    x = torch.randn(2, 3, dims.d_model)
    expected = x + 2 * (x / 2) + (x / 2 + 1)
    torch.testing.assert_close(run_block(Parallel, dims, x), expected)


def test_a_shared_norm_is_one_module(dims: tfs.Dims) -> None:
    block = Parallel(dims, attention=Doubling(), mlp=PlusOne(), make_norm=Halving, shared_norm=True)
    assert block.norm_attention is block.norm_mlp
