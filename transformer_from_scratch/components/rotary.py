"""``rotary``: rotary position embedding (RoPE), turning queries and keys by their position."""

from collections.abc import Mapping
from typing import Any

import torch

from transformer_from_scratch.core.dims import Dims
from transformer_from_scratch.core.kinds import PositionalEncoding
from transformer_from_scratch.core.shapes import HeadVectors, Positions


class Rotary(PositionalEncoding):
    """Rotary position embedding (Su et al. 2021, "RoFormer", §3.4).

    Feature pairs of each query and key are rotated by the angle ``pos * base^(-2i/d)``, so
    the dot product of a query at ``m`` and a key at ``n`` depends only on ``m - n``: attention
    sees relative position, and nothing is added to the residual stream. Pairs are
    ``(i, i + d/2)`` of the rotated part ("rotate half", as GPT-NeoX and Llama do).
    ``fraction`` rotates only the first ``fraction * d_head`` features (GPT-NeoX rotates 25%);
    the rest pass through unchanged.
    """

    cos: torch.Tensor
    sin: torch.Tensor

    def __init__(self, dims: Dims, base: float = 10000.0, fraction: float = 1.0) -> None:
        super().__init__()
        self.rotated = rotated_width(dims.d_head, fraction)
        half = torch.arange(0, self.rotated, 2, dtype=torch.float64) / self.rotated
        angles = torch.arange(dims.n_ctx, dtype=torch.float64)[:, None] / base**half
        angles = torch.cat([angles, angles], dim=-1)
        self.register_buffer("cos", angles.cos().to(torch.get_default_dtype()), persistent=False)
        self.register_buffer("sin", angles.sin().to(torch.get_default_dtype()), persistent=False)

    def rotate(self, x: HeadVectors, positions: Positions) -> HeadVectors:
        """Queries or keys, each feature pair turned by its position's angle."""
        turned, kept = x[..., : self.rotated], x[..., self.rotated :]
        cos = self.cos[positions].to(x.dtype)
        sin = self.sin[positions].to(x.dtype)
        first, second = turned.chunk(2, dim=-1)
        rotated = turned * cos + torch.cat([-second, first], dim=-1) * sin
        return torch.cat([rotated, kept], dim=-1)


def rotated_width(d_head: int, fraction: float) -> int:
    """How many features of a head are rotated."""
    return int(d_head * fraction)


def validate(dims: Dims, options: Mapping[str, Any]) -> list[str]:
    """The rotated width must be a positive even number (features rotate in pairs)."""
    fraction = options.get("fraction", 1.0)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction <= 1:
        return [f"option fraction = {fraction!r} must be in (0, 1]"]
    width = rotated_width(dims.d_head, fraction)
    if width == 0 or width % 2:
        even = [f for f in (0.25, 0.5, 1.0) if rotated_width(dims.d_head, f) % 2 == 0]
        return [
            f"option fraction = {fraction} rotates {width} of d_head = {dims.d_head} features, "
            f"but features rotate in pairs: choose a fraction giving an even count (e.g. {even})"
        ]
    return []
