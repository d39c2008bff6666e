"""``layer_norm``: layer normalisation, written out."""

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from transformer_from_scratch.core.dims import Dims
from transformer_from_scratch.core.functional import layer_normalize
from transformer_from_scratch.core.hooks import HookPoint, listened
from transformer_from_scratch.core.shapes import Residual


class LayerNorm(nn.Module):
    """Layer normalisation (Ba, Kiros & Hinton 2016, §3): per position, over ``d_model``.

    ``y = (x - mean(x)) / sqrt(var(x) + eps) * gain + bias``, with the biased variance. Each
    residual vector is centred and scaled to unit variance, then given a learned scale and
    shift. It is invariant to shifting or scaling one position's input, which steadies training
    however large the residual stream grows. The arithmetic, and its hand-derived backward,
    live in ``core.functional.layer_normalize``.
    """

    def __init__(self, dims: Dims, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dims.d_model))
        self.bias = nn.Parameter(torch.zeros(dims.d_model)) if bias else None
        self.hook_scale = HookPoint()  # sqrt(var + eps) [batch pos 1]
        self.hook_normalized = HookPoint()  # (x - mean) / scale, before gain and bias

    def forward(self, residual: Residual) -> Residual:
        """The normalised residual vector at each position."""
        if listened(self.hook_scale, self.hook_normalized):
            return self._written_out(residual)
        return layer_normalize(residual, self.weight, self.bias, self.eps)

    def _written_out(self, residual: Residual) -> Residual:
        """The same sum step by step, so a hook can see and replace the scale."""
        centred = residual - residual.mean(dim=-1, keepdim=True)
        scale = self.hook_scale((centred.square().mean(dim=-1, keepdim=True) + self.eps).sqrt())
        out = self.hook_normalized(centred / scale) * self.weight
        return out if self.bias is None else out + self.bias


def validate(dims: Dims, options: Mapping[str, Any]) -> list[str]:
    """``eps`` must be a small positive number."""
    eps = options.get("eps", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, int | float) or eps <= 0:
        return [f"option eps = {eps!r} must be a positive number (1e-5 is usual)"]
    return []
