"""``relu``: the two-layer ReLU MLP of the 2017 transformer."""

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from transformer_from_scratch.core.dims import Dims
from transformer_from_scratch.core.functional import affine, choice_problems, new_weight
from transformer_from_scratch.core.hooks import HookPoint
from transformer_from_scratch.core.shapes import Residual

INITS = ("gpt2", "seed")


class ReLU(nn.Module):
    """Position-wise feed-forward network, ``max(0, x W_in + b_in) W_out + b_out``.

    Vaswani et al. 2017, eq. 2. Each position is transformed on its own: the MLP moves no
    information between positions (attention does that). Init ``seed``: Kaiming-normal ``W_in``
    (suited to ReLU), Xavier-normal ``W_out``, zero biases; ``gpt2``: N(0, 0.02^2) with ``W_out``
    scaled by 1/sqrt(2 n_layers).
    """

    def __init__(self, dims: Dims, bias: bool = True, init: str = "gpt2") -> None:
        super().__init__()
        d, m = dims.d_model, dims.d_mlp
        seed = init == "seed"
        out_std = 0.02 / math.sqrt(2 * dims.n_layers)
        self.W_in = new_weight(
            d, m, scheme="kaiming_normal" if seed else "normal", fan_in=d, fan_out=m
        )
        self.W_out = new_weight(
            m, d, scheme="xavier_normal" if seed else "normal", fan_in=m, fan_out=d, std=out_std
        )
        self.b_in = nn.Parameter(torch.zeros(m)) if bias else None
        self.b_out = nn.Parameter(torch.zeros(d)) if bias else None
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, residual: Residual) -> Residual:
        """The MLP's output at each position."""
        pre = self.hook_pre(affine(residual, self.W_in, self.b_in))
        hidden = self.hook_post(torch.clamp_min(pre, 0.0))
        return affine(hidden, self.W_out, self.b_out)


def validate(dims: Dims, options: Mapping[str, Any]) -> list[str]:
    """Spec-time checks of the options."""
    return choice_problems("init", options.get("init", "gpt2"), INITS)
