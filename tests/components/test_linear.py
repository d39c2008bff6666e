"""linear: running sums equal the quadratic form of the same feature-map attention."""

import torch

import transformer_from_scratch as tfs
from transformer_from_scratch.components.linear import Linear


def test_equals_the_explicit_causal_feature_attention(dims: tfs.Dims) -> None:
    q, k, v = (torch.randn(2, 2, 6, 8, dtype=torch.float64) for _ in range(3))
    pos = torch.arange(6)
    out = Linear(dims, eps=0.0)(q, k, v, query_positions=pos, key_positions=pos)
    phi_q, phi_k = torch.nn.functional.elu(q) + 1, torch.nn.functional.elu(k) + 1
    weights = (phi_q @ phi_k.transpose(-1, -2)).tril()
    torch.testing.assert_close(out, (weights / weights.sum(-1, keepdim=True)) @ v)


def test_later_queries_against_all_keys_match_the_full_pass(dims: tfs.Dims) -> None:
    q, k, v = (torch.randn(1, 2, 6, 8) for _ in range(3))
    pos = torch.arange(6)
    full = Linear(dims)(q, k, v, query_positions=pos, key_positions=pos)
    tail = Linear(dims)(q[:, :, 4:], k, v, query_positions=pos[4:], key_positions=pos)
    torch.testing.assert_close(tail, full[:, :, 4:])
