"""``geglu``: the GELU-gated MLP of T5 v1.1 and Gemma."""

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


class GeGLU(nn.Module):
    """Gated MLP ``(gelu(x W_gate) * (x W_up)) W_down`` (Shazeer 2020, "GLU Variants").

    The gate's activation is GELU; ``approximate="tanh"`` uses its tanh form (Gemma does).
    No biases by default. Init as GPT-2: N(0, 0.02^2), ``W_down`` scaled by 1/sqrt(2 n_layers).
    """

    def __init__(self, dims: Dims, bias: bool = False, approximate: str = "none") -> None:
        super().__init__()
        d, m = dims.d_model, dims.d_mlp
        self.approximate = approximate
        self.W_gate = new_weight(d, m, scheme="normal", fan_in=d, fan_out=m)
        self.W_up = new_weight(d, m, scheme="normal", fan_in=d, fan_out=m)
        out_std = 0.02 / math.sqrt(2 * dims.n_layers)
        self.W_down = new_weight(m, d, scheme="normal", fan_in=m, fan_out=d, std=out_std)
        self.b_gate = nn.Parameter(torch.zeros(m)) if bias else None
        self.b_up = nn.Parameter(torch.zeros(m)) if bias else None
        self.b_down = nn.Parameter(torch.zeros(d)) if bias else None
        self.hook_pre = HookPoint()
        self.hook_pre_linear = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, residual: Residual) -> Residual:
        """The MLP's output at each position."""
        pre = self.hook_pre(affine(residual, self.W_gate, self.b_gate))
        up = self.hook_pre_linear(affine(residual, self.W_up, self.b_up))
        hidden = self.hook_post(gelu(pre, self.approximate) * up)
        return affine(hidden, self.W_down, self.b_down)


def validate(dims: Dims, options: Mapping[str, Any]) -> list[str]:
    """Spec-time checks of the options."""
    return choice_problems("approximate", options.get("approximate", "none"), APPROXIMATIONS)
