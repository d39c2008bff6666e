"""Correct implementations that differ from the built-ins in ways the suite must not punish.

Each sits beside a broken one in ``broken.py``: the suite must tell the two apart.
"""

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

import transformer_from_scratch as tfs
from tests.conformance.broken import TiledKernel, _Kernel
from transformer_from_scratch.components.embedding import Embedding
from transformer_from_scratch.components.gelu import GELU
from transformer_from_scratch.components.learned import Learned
from transformer_from_scratch.components.multi_head import MultiHead
from transformer_from_scratch.components.pre_norm import PreNorm
from transformer_from_scratch.core.cache import LayerCache
from transformer_from_scratch.core.functional import affine, dropout, gelu
from transformer_from_scratch.core.hooks import HookPoint


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
        weights = dropout(torch.softmax(scores, dim=-1), self.dropout, self.training)
        return (weights.to(low) @ v.to(low)).to(q.dtype)


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


class ReZero(nn.Module):
    """ReZero (Bachlechner et al. 2020): no norms, each sublayer's output scaled by a learned
    number that starts at 0, so the block starts as the identity and its sublayers receive no
    gradient until that number moves."""

    def __init__(self, dims: tfs.Dims, attention: nn.Module, mlp: nn.Module,
                 make_norm: Callable[[], nn.Module]) -> None:  # fmt: skip
        super().__init__()
        self.attention, self.mlp, self.dropout = attention, mlp, dims.dropout
        self.alpha = nn.Parameter(torch.zeros(()))
        self.hook_resid_mid = HookPoint()

    def forward(self, residual: Tensor, *, positional: tfs.PositionalEncoding, positions: Tensor,
                cache: LayerCache | None = None) -> Tensor:  # fmt: skip
        attended = self.attention(residual, positional=positional, positions=positions, cache=cache)
        residual = self.hook_resid_mid(residual + self._drop(self.alpha * attended))
        out: Tensor = residual + self._drop(self.alpha * self.mlp(residual))
        return out

    def _drop(self, update: Tensor) -> Tensor:
        return dropout(update, self.dropout, self.training)


class TopTwoOfFour(GELU):
    """A mixture of four experts, each a quarter of the hidden units, each position sent to
    its two highest-scoring ones (Shazeer et al. 2017): the others' units are zeroed, so an
    expert learns only from the positions routed to it."""

    def __init__(self, dims: tfs.Dims) -> None:
        super().__init__(dims)
        self.router = nn.Parameter(0.02 * torch.randn(dims.d_model, 4))

    def forward(self, residual: Tensor) -> Tensor:
        scores = residual @ self.router
        top, chosen = scores.topk(2, dim=-1)
        gates = torch.zeros_like(scores).scatter(-1, chosen, torch.softmax(top, dim=-1))
        per_unit = gates.repeat_interleave(self.W_in.shape[1] // 4, dim=-1)
        pre = self.hook_pre(affine(residual, self.W_in, self.b_in))
        return affine(self.hook_post(gelu(pre) * per_unit), self.W_out, self.b_out)


class WithoutDropout(PreNorm):
    """A block with no dropout of its own: not at fault (the suite says so instead)."""

    def _drop(self, update: Tensor) -> Tensor:
        return update


class HeadsAsWideAsTheModel(MultiHead):
    """Attention that, like any with one fused ``[d_model, 3 d_model]`` projection, needs the
    heads exactly as wide as the model, and says so in ``validate`` instead of failing later."""

    def __init__(self, dims: tfs.Dims, kernel: nn.Module) -> None:
        super().__init__(dims, kernel)

    @staticmethod
    def validate(dims: tfs.Dims, options: Mapping[str, Any]) -> list[str]:
        """The heads together must be exactly as wide as the model."""
        if dims.n_heads * dims.d_head == dims.d_model:
            return []
        return [f"n_heads * d_head = {dims.n_heads * dims.d_head} must equal d_model = "
                f"{dims.d_model} (one fused projection)"]  # fmt: skip


class ZeroOutputMLP(GELU):
    """An MLP whose output projection starts at zero (as modded-nanogpt initialises it): at
    initialisation it writes nothing, so nothing behind it is visible yet."""

    def __init__(self, dims: tfs.Dims) -> None:
        super().__init__(dims)
        with torch.no_grad():
            self.W_out.zero_()


class ZeroOutputAttention(MultiHead):
    """Attention whose ``W_O`` starts at zero: no input, rotation or bias shows at first."""

    def __init__(self, dims: tfs.Dims, kernel: nn.Module) -> None:
        super().__init__(dims, kernel)
        with torch.no_grad():
            self.W_O.zero_()


class UnitScaleLearned(Learned):
    """Learned positions drawn N(0, 1), as ``nn.Embedding`` draws them (GPT-2 draws 0.01):
    fifty times the token vectors' scale, so it learns more slowly."""

    def __init__(self, dims: tfs.Dims) -> None:
        super().__init__(dims)
        with torch.no_grad():
            self.weight.normal_()


class T5RelativeBias(tfs.PositionalEncoding):
    """T5's learned relative-position bias (Raffel et al. 2020), causal: a learned number per
    head and distance bucket, exact up to 16 and logarithmic up to 128. Its far buckets are
    never reached in a short context, and a fixed-bias kernel (flash) refuses it when run."""

    def __init__(self, dims: tfs.Dims, buckets: int = 32, max_distance: int = 128) -> None:
        super().__init__()
        self.buckets, self.max_distance = buckets, max_distance
        self.table = nn.Parameter(0.02 * torch.randn(dims.n_heads, buckets))

    def score_bias(self, query_positions: Tensor, key_positions: Tensor) -> Tensor:
        distance = (query_positions[:, None] - key_positions[None, :]).clamp(min=0)
        exact = self.buckets // 2
        spread = torch.log(distance.clamp(min=1) / exact) / math.log(self.max_distance / exact)
        far = (exact + spread * (self.buckets - exact)).long().clamp(max=self.buckets - 1)
        return self.table[:, torch.where(distance < exact, distance, far)]


class ScaledEmbedding(Embedding):
    """Token vectors multiplied by ``sqrt(d_model)`` (Vaswani et al. 2017, §3.4; Gemma): a
    lookup all the same, so large token ids are exact in bfloat16 too."""

    def forward(self, tokens: Tensor) -> Tensor:
        return self.weight[tokens] * math.sqrt(self.weight.shape[1])


class DropPath(PreNorm):
    """Stochastic depth (Huang et al. 2016): while training, each sample's whole sublayer
    output is dropped with probability p (the rest scaled by 1 / (1 - p)), not each entry: a
    different dropout, but on what the sublayers add, never on the residual stream."""

    def _drop(self, update: Tensor) -> Tensor:
        if not self.training or not self.dropout:
            return update
        keep = torch.rand(update.shape[0], 1, 1, device=update.device) >= self.dropout
        return update * keep / (1 - self.dropout)


# (kind, name, factory, capabilities)
CORRECT = [
    ("attention_kernel", "tiled_rescaled", TiledRescaled, ["exact", "kv_cache", "score_bias"]),
    ("attention_kernel", "float32_softmax", Float32Softmax, ["exact", "kv_cache", "score_bias"]),
    ("attention_kernel", "bfloat16_softmax", BFloat16Softmax, ["kv_cache", "score_bias"]),
    ("mlp", "stable_silu", StableSiLU, []),
    ("mlp", "follows_device", FollowsDevice, []),
    ("block", "rezero", ReZero, ["identity_path", "resid_mid"]),
    ("mlp", "top_two_of_four", TopTwoOfFour, []),
    ("block", "without_dropout", WithoutDropout, ["identity_path", "resid_mid"]),
    ("attention", "heads_as_wide_as_the_model", HeadsAsWideAsTheModel, ["kv_cache", "rotary", "score_bias"]),
    ("mlp", "zero_output_mlp", ZeroOutputMLP, []),
    ("attention", "zero_output_attention", ZeroOutputAttention, ["kv_cache", "rotary", "score_bias"]),
    ("positional", "unit_scale_learned", UnitScaleLearned, ["additive"]),
    ("positional", "t5_relative_bias", T5RelativeBias, ["score_bias"]),
    ("embedding", "scaled_embedding", ScaledEmbedding, []),
    ("block", "drop_path", DropPath, ["identity_path", "resid_mid"]),
]  # fmt: skip
