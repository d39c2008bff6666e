"""``gelu``: the two-layer GELU MLP of BERT and GPT-2."""

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from transformer_from_scratch.core.dims import Dims
from transformer_from_scratch.core.functional import affine, choice_problems, gelu, new_weight
from transformer_from_scratch.core.hooks import HookPoint
from transformer_from_scratch.core.shapes import Residual

APPROXIMATIONS = ("none", "tanh")


class GELU(nn.Module):
    """Position-wise MLP ``GELU(x W_in + b_in) W_out + b_out`` (Radford et al. 2019, GPT-2).

    GELU (Hendrycks & Gimpel 2016) weights its input by the probability that a standard normal
    is below it: a smooth ReLU whose gradient never vanishes entirely. ``approximate="tanh"``
    is the form GPT-2 shipped with. Init: N(0, 0.02^2), ``W_out`` scaled by 1/sqrt(2 n_layers).
    """

    def __init__(self, dims: Dims, bias: bool = True, approximate: str = "none") -> None:
        super().__init__()
        d, m = dims.d_model, dims.d_mlp
        out_std = 0.02 / math.sqrt(2 * dims.n_layers)
        self.approximate = approximate
        self.W_in = new_weight(d, m, scheme="normal", fan_in=d, fan_out=m)
        self.W_out = new_weight(m, d, scheme="normal", fan_in=m, fan_out=d, std=out_std)
        self.b_in = nn.Parameter(torch.zeros(m)) if bias else None
        self.b_out = nn.Parameter(torch.zeros(d)) if bias else None
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, residual: Residual) -> Residual:
        """The MLP's output at each position."""
        pre = self.hook_pre(affine(residual, self.W_in, self.b_in))
        hidden = self.hook_post(gelu(pre, self.approximate))
        return affine(hidden, self.W_out, self.b_out)


def validate(dims: Dims, options: Mapping[str, Any]) -> list[str]:
    """Spec-time checks of the options."""
    return choice_problems("approximate", options.get("approximate", "none"), APPROXIMATIONS)
