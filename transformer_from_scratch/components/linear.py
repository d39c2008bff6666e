"""``linear``: kernelised linear attention, causal through running sums (approximate)."""

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from transformer_from_scratch.core.dims import Dims
from transformer_from_scratch.core.functional import no_weight_dropout
from transformer_from_scratch.core.shapes import (
    KeyPositions,
    Keys,
    Mixed,
    Queries,
    QueryPositions,
    ScoreBias,
    Values,
)


class Linear(nn.Module):
    """Linear attention (Katharopoulos et al. 2020, "Transformers are RNNs", §3.2).

    The softmax similarity ``exp(q.k)`` is replaced by ``phi(q).phi(k)`` with the feature map
    ``phi(x) = elu(x) + 1`` (positive, so weights stay positive). Then
    ``out_i = phi(q_i) S_i / phi(q_i) z_i`` with running sums ``S_i = sum_{j<=i} phi(k_j) v_j^T``
    and ``z_i = sum_{j<=i} phi(k_j)``: time and memory grow linearly with length, and decoding
    is an RNN. It is *not* softmax attention, so it declares itself approximate; it cannot add
    a score bias (ALiBi) or honour a window. Keys are assumed contiguous in position.
    """

    def __init__(self, dims: Dims, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(
        self,
        queries: Queries,
        keys: Keys,
        values: Values,
        *,
        query_positions: QueryPositions,
        key_positions: KeyPositions,
        score_bias: ScoreBias | None = None,
    ) -> Mixed:
        """Each query's feature-weighted average of the values up to its position."""
        q, k = _features(queries), _features(keys)
        running_kv = torch.cumsum(k[..., :, None] * values[..., None, :], dim=-3)
        running_k = torch.cumsum(k, dim=-2)
        rows = query_positions - key_positions[0]
        numerator = (q[..., :, None, :] @ running_kv[..., rows, :, :]).squeeze(-2)
        denominator = (q * running_k[..., rows, :]).sum(-1, keepdim=True)
        return numerator / (denominator + self.eps)


def _features(x: Tensor) -> Tensor:
    """``elu(x) + 1``, written out: ``x + 1`` for positive x, ``exp(x)`` otherwise."""
    return torch.where(x > 0, x + 1, torch.exp(torch.clamp_max(x, 0.0)))


def validate(dims: Dims, options: Mapping[str, Any]) -> list[str]:
    """No dropout: the weights are never formed, so there is nothing to drop."""
    return no_weight_dropout("linear", dims)
