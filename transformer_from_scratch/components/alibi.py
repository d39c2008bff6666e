"""``alibi``: attention with linear biases, a per-head penalty growing with distance."""

import math

import torch

from transformer_from_scratch.core.dims import Dims
from transformer_from_scratch.core.kinds import PositionalEncoding
from transformer_from_scratch.core.shapes import KeyPositions, QueryPositions, ScoreBias


class ALiBi(PositionalEncoding):
    """ALiBi (Press, Smith & Lewis 2022, "Train Short, Test Long", §3).

    No position vectors at all: each head adds ``-slope_h * (query_pos - key_pos)`` to its
    attention scores, so far-away keys are penalised linearly. Slopes form a geometric sequence
    ``2^(-8/n), 2^(-16/n), ...`` over the ``n`` heads (for a head count that is not a power of
    two, the paper's interleaving of the next power's slopes), so some heads look locally and
    others far. Because only the offset matters, it extrapolates past the training length.
    """

    slopes: torch.Tensor

    def __init__(self, dims: Dims) -> None:
        super().__init__()
        self.register_buffer("slopes", torch.tensor(alibi_slopes(dims.n_heads)), persistent=False)

    def score_bias(self, query_positions: QueryPositions, key_positions: KeyPositions) -> ScoreBias:
        """``[head query_pos key_pos]`` biases: minus slope times distance."""
        distance = (query_positions[:, None] - key_positions[None, :]).to(self.slopes.dtype)
        return -self.slopes[:, None, None] * distance[None]


def alibi_slopes(n_heads: int) -> list[float]:
    """The paper's head slopes."""
    closest = 2 ** math.floor(math.log2(n_heads))
    base = [2 ** (-8 * (i + 1) / closest) for i in range(closest)]
    if closest == n_heads:
        return base
    extra = [2 ** (-4 * (2 * i + 1) / closest) for i in range(n_heads - closest)]
    return base + extra
