"""``squared_relu``: the Primer MLP."""

import math

import torch
from torch import nn

from transformer_from_scratch import Dims
from transformer_from_scratch.core.functional import affine, new_weight
from transformer_from_scratch.core.hooks import HookPoint
from transformer_from_scratch.core.shapes import Residual


class SquaredReLU(nn.Module):
    """MLP with a squared ReLU, ``relu(x W_in + b_in)^2 W_out + b_out`` (So et al. 2021, §4).

    Primer's architecture search found that squaring the ReLU speeds up language-model training
    at no cost in parameters. Init as GPT-2: N(0, 0.02^2), ``W_out`` scaled by 1/sqrt(2 n_layers).
    """

    def __init__(self, dims: Dims, bias: bool = True) -> None:
        super().__init__()
        d, m = dims.d_model, dims.d_mlp
        out_std = 0.02 / math.sqrt(2 * dims.n_layers)
        self.W_in = new_weight(d, m, scheme="normal", fan_in=d, fan_out=m)
        self.W_out = new_weight(m, d, scheme="normal", fan_in=m, fan_out=d, std=out_std)
        self.b_in = nn.Parameter(torch.zeros(m)) if bias else None
        self.b_out = nn.Parameter(torch.zeros(d)) if bias else None
        self.hook_pre = HookPoint()  # the hook points kind mlp owes (see core/kinds.py)
        self.hook_post = HookPoint()

    def forward(self, residual: Residual) -> Residual:
        """The MLP's output at each position."""
        pre = self.hook_pre(affine(residual, self.W_in, self.b_in))
        hidden = self.hook_post(torch.clamp_min(pre, 0.0).square())
        return affine(hidden, self.W_out, self.b_out)
