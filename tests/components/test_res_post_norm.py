"""res_post_norm: x + Norm(Attention(x)), then + Norm(MLP(x)) (the original layout)."""

import torch

import transformer_from_scratch as tfs
from tests.components.blocks import run_block
from transformer_from_scratch.components.res_post_norm import ResPostNorm


def test_normalises_each_sublayers_output_before_adding_it(dims: tfs.Dims) -> None:
    x = torch.randn(2, 3, dims.d_model)
    after_attention = x + (2 * x) / 2
    expected = after_attention + (after_attention + 1) / 2
    torch.testing.assert_close(run_block(ResPostNorm, dims, x), expected)
