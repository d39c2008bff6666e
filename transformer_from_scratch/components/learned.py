"""``learned``: a trained vector per position, added to the residual stream (GPT-2)."""

from torch import nn

from transformer_from_scratch.core.dims import Dims
from transformer_from_scratch.core.functional import new_weight
from transformer_from_scratch.core.kinds import PositionalEncoding
from transformer_from_scratch.core.shapes import Positions, PositionVectors


class Learned(PositionalEncoding):
    """Learned absolute positions: row ``p`` of ``W_pos [n_ctx d_model]`` is position ``p``'s.

    GPT-2 (Radford et al. 2019) learns these like token embeddings, initialised N(0, 0.01^2).
    The model can only use positions it has trained on: nothing generalises past ``n_ctx``.
    """

    def __init__(self, dims: Dims, std: float = 0.01) -> None:
        super().__init__()
        self.weight: nn.Parameter = new_weight(
            dims.n_ctx, dims.d_model, scheme="normal", fan_in=1, fan_out=1, std=std
        )

    def embed(self, positions: Positions) -> PositionVectors:
        """The learned vector of each position."""
        return self.weight[positions]
