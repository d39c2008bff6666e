"""``multi_head``: causal multi-head self-attention (and grouped-/multi-query via n_kv_heads)."""

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from transformer_from_scratch.core.cache import LayerCache
from transformer_from_scratch.core.dims import Dims
from transformer_from_scratch.core.functional import (
    affine,
    choice_problems,
    new_weight,
    rms_normalize,
)
from transformer_from_scratch.core.hooks import (
    HookPoint,
    attend_with_pattern,
    fire_heads,
    listened,
)
from transformer_from_scratch.core.kinds import AttentionKernel, PositionalEncoding
from transformer_from_scratch.core.shapes import Positions, Residual

INITS = ("gpt2", "seed")


class MultiHead(nn.Module):
    """Multi-head attention (Vaswani et al. 2017, §3.2.2), written per head.

    Each head ``h`` reads the residual stream through ``W_Q[h], W_K[h], W_V[h]``
    ``[d_model d_head]``, lets each position attend to earlier ones (the kernel does the
    ``softmax(QK^T / sqrt(d_head)) V`` part) and writes back through ``W_O[h]``
    ``[d_head d_model]``; the heads' writes add up, which is the same as concatenating them and
    multiplying by one ``[head*d_head, d_model]`` matrix (Elhage et al. 2021, "Attention heads
    are independent and additive").

    With ``n_kv_heads < n_heads`` several query heads share one key/value head: grouped-query
    (Ainslie et al. 2023) or, with one, multi-query attention (Shazeer 2019).

    ``bias`` adds biases to the four projections (GPT-2 and GPT-NeoX have them; Llama has
    not). ``qk_norm`` RMS-normalises each head's queries and keys (with learned gains, before any
    rotation), which keeps attention logits from growing without bound (Dehghani et al. 2023;
    used by OLMo 2, Qwen 3, Gemma 3).

    Init ``gpt2``: N(0, 0.02^2), with ``W_O`` scaled by 1/sqrt(2 n_layers) so the residual
    stream's variance does not grow with depth; ``seed``: Kaiming-normal ``W_Q, W_K, W_V`` and
    Xavier-normal ``W_O``, as the original project.
    """

    def __init__(
        self,
        dims: Dims,
        kernel: AttentionKernel,
        bias: bool = False,
        init: str = "gpt2",
        qk_norm: bool = False,
    ) -> None:
        super().__init__()
        self.kernel = kernel
        self.group = dims.n_heads // dims.n_kv_heads
        self._init_weights(dims, init)
        self.q_gain = nn.Parameter(torch.ones(dims.d_head)) if qk_norm else None
        self.k_gain = nn.Parameter(torch.ones(dims.d_head)) if qk_norm else None
        self.b_Q = _bias(bias, dims.n_heads, dims.d_head)
        self.b_K = _bias(bias, dims.n_kv_heads, dims.d_head)
        self.b_V = _bias(bias, dims.n_kv_heads, dims.d_head)
        self.b_O = _bias(bias, dims.d_model)
        self.hook_q, self.hook_k, self.hook_v = HookPoint(), HookPoint(), HookPoint()
        self.hook_attn_scores, self.hook_pattern = HookPoint(), HookPoint()
        self.hook_z = HookPoint()

    def _init_weights(self, dims: Dims, init: str) -> None:
        d, h, kv, dh = dims.d_model, dims.n_heads, dims.n_kv_heads, dims.d_head
        qkv = "kaiming_normal" if init == "seed" else "normal"
        self.W_Q = new_weight(h, d, dh, scheme=qkv, fan_in=d, fan_out=dh)
        self.W_K = new_weight(kv, d, dh, scheme=qkv, fan_in=d, fan_out=dh)
        self.W_V = new_weight(kv, d, dh, scheme=qkv, fan_in=d, fan_out=dh)
        out_std = 0.02 / math.sqrt(2 * dims.n_layers)
        scheme = "xavier_normal" if init == "seed" else "normal"
        self.W_O = new_weight(h, dh, d, scheme=scheme, fan_in=h * dh, fan_out=d, std=out_std)

    def forward(
        self,
        residual: Residual,
        *,
        positional: PositionalEncoding,
        positions: Positions,
        cache: LayerCache | None = None,
    ) -> Residual:
        """Each position's update to the residual stream, mixed from earlier positions."""
        queries, keys, values = self._project(residual, cache)
        queries = fire_heads(self.hook_q, queries)
        keys = fire_heads(self.hook_k, keys)
        values = fire_heads(self.hook_v, values)
        if self.q_gain is not None and self.k_gain is not None:
            queries = rms_normalize(queries, 1e-6) * self.q_gain
            keys = rms_normalize(keys, 1e-6) * self.k_gain
        queries, keys = positional.rotate(queries, positions), positional.rotate(keys, positions)
        earlier = 0 if cache is None else cache.length
        if cache is not None:
            keys, values = cache.extend(keys, values)
        key_positions = torch.arange(-earlier, positions.shape[0], device=positions.device)
        key_positions = key_positions + positions[:1]
        # Someone listening for scores or patterns gets them computed (whatever the kernel).
        attend = (
            self._attend_with_pattern
            if listened(self.hook_attn_scores, self.hook_pattern)
            else self.kernel
        )
        mixed = attend(
            queries,
            self._share(keys),
            self._share(values),
            query_positions=positions,
            key_positions=key_positions,
            score_bias=positional.score_bias(positions, key_positions),
        )
        mixed = fire_heads(self.hook_z, mixed)
        # Heads side by side: [batch pos head*d_head] @ [head*d_head d_model] sums the heads'
        # writes in one matrix product.
        heads = mixed.transpose(1, 2).reshape(*residual.shape[:-1], -1)
        return affine(heads, self.W_O.reshape(-1, self.W_O.shape[-1]), self.b_O)

    def _attend_with_pattern(self, *args: Tensor, **kwargs: Any) -> Tensor:
        window = getattr(self.kernel, "window", None)
        return attend_with_pattern(
            self.hook_attn_scores, self.hook_pattern, *args, **kwargs, window=window
        )

    def _project(
        self, residual: Residual, cache: LayerCache | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values of every head in one matrix product (``W_Q``, ``W_K`` and
        ``W_V`` side by side, each laid out ``[d_model head*d_head]``), then split into heads.
        While generating, the side-by-side matrix is made once and kept in the cache."""
        weights = (self.W_Q, self.W_K, self.W_V)
        kept = cache.keep.get("qkv") if cache is not None else None
        fused = kept if isinstance(kept, tuple) else self._fused(weights)
        if cache is not None and kept is None and not torch.is_grad_enabled():
            cache.keep["qkv"] = fused
        flat, bias = fused
        out = affine(residual, flat, bias)
        widths = [w.shape[0] * w.shape[2] for w in weights]
        return tuple(
            part.view(*residual.shape[:-1], w.shape[0], w.shape[2]).transpose(-3, -2)
            for part, w in zip(out.split(widths, dim=-1), weights, strict=True)
        )

    def _fused(self, weights: tuple[Tensor, ...]) -> tuple[Tensor, Tensor | None]:
        # [d_model head d_head] views side by side: one copy (a reshape first would be two)
        flat = torch.cat([w.permute(1, 0, 2) for w in weights], dim=1).flatten(1)
        biases = (self.b_Q, self.b_K, self.b_V)
        bias = (
            None
            if self.b_Q is None
            else torch.cat([b.reshape(-1) for b in biases if b is not None])
        )
        return flat, bias

    def _share(self, x: Tensor) -> Tensor:
        """Repeat each key/value head for the query heads of its group (no-op for plain MHA)."""
        return x if self.group == 1 else x.repeat_interleave(self.group, dim=1)


def _bias(enabled: bool, *shape: int) -> nn.Parameter | None:
    return nn.Parameter(torch.zeros(*shape)) if enabled else None


def validate(dims: Dims, options: Mapping[str, Any]) -> list[str]:
    """Spec-time checks of the options."""
    return choice_problems("init", options.get("init", "gpt2"), INITS)
