"""``swiglu``: the gated MLP of PaLM, Llama and Mistral."""

import math

import torch
from torch import nn

from transformer_from_scratch.core.dims import Dims
from transformer_from_scratch.core.functional import affine, new_weight
from transformer_from_scratch.core.hooks import HookPoint
from transformer_from_scratch.core.shapes import Residual


class SwiGLU(nn.Module):
    """Gated MLP ``(silu(x W_gate) * (x W_up)) W_down`` (Shazeer 2020, "GLU Variants").

    One branch decides how much of the other passes, feature by feature; ``silu(z) = z *
    sigmoid(z)`` (Ramachandran et al. 2017). It has three matrices, so models using it shrink
    ``d_mlp`` (Llama: about 8/3 d_model) to keep the parameter count. No biases by default, as
    in Llama. Init as GPT-2: N(0, 0.02^2), ``W_down`` scaled by 1/sqrt(2 n_layers).
    """

    def __init__(self, dims: Dims, bias: bool = False) -> None:
        super().__init__()
        d, m = dims.d_model, dims.d_mlp
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
        gate = self.hook_pre(affine(residual, self.W_gate, self.b_gate))
        up = self.hook_pre_linear(affine(residual, self.W_up, self.b_up))
        hidden = self.hook_post(gate * torch.sigmoid(gate) * up)
        return affine(hidden, self.W_down, self.b_down)
