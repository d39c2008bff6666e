"""``rms_norm``: root-mean-square normalisation (no centring)."""

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from transformer_from_scratch.core.dims import Dims
from transformer_from_scratch.core.functional import rms_normalize
from transformer_from_scratch.core.hooks import HookPoint, listened
from transformer_from_scratch.core.shapes import Residual


class RMSNorm(nn.Module):
    """RMSNorm (Zhang & Sennrich 2019): ``x / sqrt(mean(x^2) + eps) * gain``.

    Layer norm without the mean subtraction and bias: cheaper, and as good in practice, which
    is why Llama and Mistral use it. It is invariant to scaling an input vector, not to shifting
    it. Computed in float32 whatever the input dtype (as Llama's reference code does).
    """

    def __init__(self, dims: Dims, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dims.d_model))
        self.hook_scale = HookPoint()  # sqrt(mean(x^2) + eps) [batch pos 1]
        self.hook_normalized = HookPoint()  # x / scale, before the gain (as TransformerLens)

    def forward(self, residual: Residual) -> Residual:
        """The normalised residual vector at each position."""
        if listened(self.hook_scale, self.hook_normalized):
            x = residual.float()
            scale = self.hook_scale((x.square().mean(dim=-1, keepdim=True) + self.eps).sqrt())
            return self.hook_normalized((x / scale).to(residual.dtype)) * self.weight
        normed = rms_normalize(residual.float(), self.eps).to(residual.dtype)
        return normed * self.weight


def validate(dims: Dims, options: Mapping[str, Any]) -> list[str]:
    """``eps`` must be a small positive number."""
    eps = options.get("eps", 1e-6)
    if isinstance(eps, bool) or not isinstance(eps, int | float) or eps <= 0:
        return [f"option eps = {eps!r} must be a positive number (1e-6 is usual)"]
    return []
