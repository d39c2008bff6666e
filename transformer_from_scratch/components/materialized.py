"""``materialized``: the textbook attention kernel, building the full score matrix."""

import math

import torch
from torch import nn

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
        scores = queries @ keys.transpose(-1, -2) / math.sqrt(queries.shape[-1])
        if score_bias is not None:
            scores = scores + score_bias
        hidden = causal_mask(query_positions, key_positions, self.window)
        scores = scores.masked_fill(hidden, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        return dropout(weights, self.dropout, self.training) @ values
