"""sdpa: PyTorch's fused kernel agrees with the formula in every masking mode."""

import pytest
import torch

import transformer_from_scratch as tfs
from transformer_from_scratch.components.sdpa import SDPA
from transformer_from_scratch.conformance.checks_kernel import reference_attention


@pytest.mark.parametrize("window", [None, 2])
def test_matches_the_formula(dims: tfs.Dims, window: int | None) -> None:
    q, k, v = (torch.randn(2, 2, 7, 8) for _ in range(3))
    pos = torch.arange(7)
    out = SDPA(dims, window=window)(q, k, v, query_positions=pos, key_positions=pos)
    torch.testing.assert_close(
        out, reference_attention(q, k, v, pos, pos, window=window), atol=1e-5, rtol=1e-4
    )


def test_fewer_queries_than_keys_and_a_bias(dims: tfs.Dims) -> None:
    q, k, v = torch.randn(1, 2, 2, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    qp, kp = torch.arange(3, 5), torch.arange(5)
    bias = torch.randn(2, 2, 5)
    out = SDPA(dims)(q, k, v, query_positions=qp, key_positions=kp, score_bias=bias)
    torch.testing.assert_close(
        out, reference_attention(q, k, v, qp, kp, bias), atol=1e-5, rtol=1e-4
    )
