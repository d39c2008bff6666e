"""pre_norm: x + Attention(Norm(x)), then + MLP(Norm(x))."""

import torch

import transformer_from_scratch as tfs
from tests.components.blocks import run_block
from transformer_from_scratch.components.pre_norm import PreNorm


def test_adds_each_sublayers_output_to_the_residual_stream(dims: tfs.Dims) -> None:
    x = torch.randn(2, 3, dims.d_model)
    after_attention = x + 2 * (x / 2)
    expected = after_attention + (after_attention / 2 + 1)
    torch.testing.assert_close(run_block(PreNorm, dims, x), expected)
