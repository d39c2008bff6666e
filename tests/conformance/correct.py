"""Correct implementations that differ from the built-ins in ways the suite must not punish.

Each sits beside a broken one in ``broken.py``: the suite must tell the two apart.
"""

import math

import torch
from torch import Tensor

from tests.conformance.broken import TiledKernel, _Kernel
from transformer_from_scratch.components.gelu import GELU
from transformer_from_scratch.core.functional import affine


class TiledRescaled(TiledKernel):
    """The tiled online softmax done right: running sums rescaled when the maximum rises."""

    rescale = True


class Float32Softmax(_Kernel):
    """An exact kernel that computes in float32 whatever its inputs (as some references do)."""

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, query_positions: Tensor,
                key_positions: Tensor, score_bias: Tensor | None = None) -> Tensor:  # fmt: skip
        bias = None if score_bias is None else score_bias.float()
        out = super().forward(q.float(), k.float(), v.float(), query_positions=query_positions,
                              key_positions=key_positions, score_bias=bias)  # fmt: skip
        return out.to(q.dtype)


class BFloat16Softmax(_Kernel):
    """An approximate kernel: softmax attention computed in bfloat16, with the bias and cache."""

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, query_positions: Tensor,
                key_positions: Tensor, score_bias: Tensor | None = None) -> Tensor:  # fmt: skip
        low = torch.bfloat16
        scores = (q.to(low) @ k.to(low).transpose(-1, -2)).float() / math.sqrt(q.shape[-1])
        if score_bias is not None:
            scores = scores + score_bias.float()
        scores = scores.masked_fill(self.hidden(query_positions, key_positions), float("-inf"))
        return (torch.softmax(scores, dim=-1).to(low) @ v.to(low)).to(q.dtype)


class StableSiLU(GELU):
    """A SiLU MLP with the gate written as ``torch.sigmoid``, which never overflows."""

    def forward(self, residual: Tensor) -> Tensor:
        pre = self.hook_pre(affine(residual, self.W_in, self.b_in))
        return affine(self.hook_post(pre * torch.sigmoid(pre)), self.W_out, self.b_out)


class FollowsDevice(GELU):
    """A gate made on the input's device and dtype: the fix for ``MakesTensorOnCPU``."""

    def forward(self, residual: Tensor) -> Tensor:
        gate = torch.ones(residual.shape[-1], dtype=residual.dtype, device=residual.device)
        return super().forward(residual) * gate


# (kind, name, factory, capabilities)
CORRECT = [
    ("attention_kernel", "tiled_rescaled", TiledRescaled, ["exact", "kv_cache", "score_bias"]),
    ("attention_kernel", "float32_softmax", Float32Softmax, ["exact", "kv_cache", "score_bias"]),
    ("attention_kernel", "bfloat16_softmax", BFloat16Softmax, ["kv_cache", "score_bias"]),
    ("mlp", "stable_silu", StableSiLU, []),
    ("mlp", "follows_device", FollowsDevice, []),
]
