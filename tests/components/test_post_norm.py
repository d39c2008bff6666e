"""post_norm: Norm(x + Attention(x)), then Norm(x + MLP(x))."""

import torch

import transformer_from_scratch as tfs
from tests.components.blocks import run_block
from transformer_from_scratch.components.post_norm import PostNorm


def test_normalises_the_sum_after_each_sublayer(dims: tfs.Dims) -> None:
    x = torch.randn(2, 3, dims.d_model)
    after_attention = (x + 2 * x) / 2
    expected = (after_attention + (after_attention + 1)) / 2
    torch.testing.assert_close(run_block(PostNorm, dims, x), expected)
