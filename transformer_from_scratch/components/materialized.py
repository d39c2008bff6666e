"""``materialized``: the textbook attention kernel, building the full score matrix."""

import math

import torch
from torch import Tensor, nn

from transformer_from_scratch.core.dims import Dims
from transformer_from_scratch.core.functional import causal_mask, dropout
from transformer_from_scratch.core.shapes import (
    KeyPositions,
    Keys,
    Mixed,
    Queries,
    QueryPositions,
    ScoreBias,
    Values,
)


class Materialized(nn.Module):
    """Scaled dot-product attention, exactly as written (Vaswani et al. 2017, eq. 1).

    ``softmax(Q K^T / sqrt(d_head) + bias + mask) V``. Dividing by ``sqrt(d_head)`` keeps the
    scores' variance near 1 whatever the head width, so the softmax does not saturate. The mask
    puts ``-inf`` wherever a key comes after its query (or, with ``window``, more than
    ``window - 1`` positions before it), so those weights are exactly zero. Memory grows with
    the square of the sequence length: the whole ``[query_pos key_pos]`` matrix is built.
    """

    def __init__(self, dims: Dims, window: int | None = None) -> None:
        super().__init__()
        self.window = window
        self.dropout = dims.dropout  # on the attention weights, while training

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
        """Each query's weighted average of the values it may see."""
        scores = (queries / math.sqrt(queries.shape[-1])) @ keys.transpose(-1, -2)
        scores += self._mask_as_bias(query_positions, key_positions, score_bias, scores.dtype)
        weights = torch.softmax(scores, dim=-1)
        return dropout(weights, self.dropout, self.training) @ values

    def _mask_as_bias(self, query_positions: QueryPositions, key_positions: KeyPositions,
                      score_bias: ScoreBias | None, dtype: torch.dtype) -> Tensor:  # fmt: skip
        """The mask as a bias to add: ``-inf`` where a query may not see a key, else 0 (plus
        the score bias). Added in place to the fresh scores, it costs one pass and no copy, and
        the gradient passes through an addition unchanged (no pass at all): cheaper than
        ``masked_fill``, with the same result."""
        hidden = causal_mask(query_positions, key_positions, self.window)
        bias = torch.zeros(hidden.shape, dtype=dtype, device=hidden.device)
        bias = bias.masked_fill(hidden, float("-inf"))
        return bias if score_bias is None else bias + score_bias
