"""flash: equal to the formula at every length and tile, forward and backward, in linear memory."""

import pytest
import torch

import transformer_from_scratch as tfs
from transformer_from_scratch.components.flash import Flash
from transformer_from_scratch.conformance.checks_kernel import reference_attention


@pytest.mark.parametrize("length", [1, 3, 8, 9, 17])
@pytest.mark.parametrize("window", [None, 3])
def test_matches_the_formula_with_ragged_tiles(
    dims: tfs.Dims, length: int, window: int | None
) -> None:
    q, k, v = (
        torch.randn(2, 2, length, 8, dtype=torch.float64, requires_grad=True) for _ in range(3)
    )
    bias = torch.randn(2, length, length, dtype=torch.float64)
    pos = torch.arange(length)
    out = Flash(dims, tile=4, window=window)(
        q, k, v, query_positions=pos, key_positions=pos, score_bias=bias
    )
    expected = reference_attention(q, k, v, pos, pos, bias, window)
    torch.testing.assert_close(out, expected)
    weights = torch.randn_like(out)
    mine = torch.autograd.grad((out * weights).sum(), (q, k, v))
    ref = torch.autograd.grad((expected * weights).sum(), (q, k, v))
    for a, b in zip(mine, ref, strict=True):
        torch.testing.assert_close(a, b)


def test_fewer_queries_than_keys_as_with_a_cache(dims: tfs.Dims) -> None:
    q, k, v = torch.randn(1, 2, 3, 8), torch.randn(1, 2, 10, 8), torch.randn(1, 2, 10, 8)
    qp, kp = torch.arange(7, 10), torch.arange(10)
    out = Flash(dims, tile=4)(q, k, v, query_positions=qp, key_positions=kp)
    torch.testing.assert_close(out, reference_attention(q, k, v, qp, kp))


def test_bfloat16_inputs_are_accumulated_in_float32(dims: tfs.Dims) -> None:
    q, k, v = (torch.randn(1, 2, 40, 8) for _ in range(3))
    pos = torch.arange(40)
    out = Flash(dims, tile=8)(
        q.bfloat16(), k.bfloat16(), v.bfloat16(), query_positions=pos, key_positions=pos
    )
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(
        out.float(), reference_attention(q, k, v, pos, pos), atol=3e-2, rtol=0
    )


def test_a_learnable_score_bias_is_refused(dims: tfs.Dims) -> None:
    q = torch.randn(1, 2, 3, 8)
    bias = torch.zeros(2, 3, 3, requires_grad=True)
    with pytest.raises(tfs.TfsError, match="treats score_bias as fixed"):
        Flash(dims)(
            q, q, q, query_positions=torch.arange(3), key_positions=torch.arange(3), score_bias=bias
        )
