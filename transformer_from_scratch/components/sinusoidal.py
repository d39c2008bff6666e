"""``sinusoidal``: fixed sine/cosine position vectors added to the residual stream."""

from collections.abc import Mapping
from typing import Any

import torch

from transformer_from_scratch.core.dims import Dims
from transformer_from_scratch.core.kinds import PositionalEncoding
from transformer_from_scratch.core.shapes import Positions, PositionVectors


class Sinusoidal(PositionalEncoding):
    """Sinusoidal position encoding (Vaswani et al. 2017, §3.5), interleaved as the original.

    ``PE[pos, 2i] = sin(pos / base^(2i/d_model))`` and ``PE[pos, 2i+1] = cos(...)``. Each pair
    of features is a clock turning at its own speed, so ``PE[pos + k]`` is a fixed rotation of
    ``PE[pos]`` (the same for every pos): attention can learn relative offsets from it. The
    table is a non-persistent buffer: it is recomputed, never saved.
    """

    table: torch.Tensor

    def __init__(self, dims: Dims, base: float = 10000.0) -> None:
        super().__init__()
        self.register_buffer("table", sinusoid_table(dims.n_ctx, dims.d_model, base), False)

    def embed(self, positions: Positions) -> PositionVectors:
        """The position vector of each position."""
        return self.table[positions]


def sinusoid_table(n_ctx: int, d_model: int, base: float) -> torch.Tensor:
    """``[n_ctx d_model]``: sin on even features, cos on odd, angle ``pos / base^(2i/d_model)``."""
    pos = torch.arange(n_ctx, dtype=torch.float64)[:, None]
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)
    angles = pos / base ** (two_i / d_model)
    table = torch.empty(n_ctx, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles)
    return table.to(torch.get_default_dtype())


def validate(dims: Dims, options: Mapping[str, Any]) -> list[str]:
    """Sine/cosine pairs need an even width."""
    if dims.d_model % 2:
        return [
            f"sinusoidal pairs sin and cos features, so d_model must be even (got {dims.d_model})"
        ]
    return []
