"""Deliberately broken implementations: each must be caught by a named conformance check.

Each one is a small, realistic mistake a learner could make, built on a correct built-in.
"""

import math
from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np
import torch
from torch import Tensor, nn

import transformer_from_scratch as tfs
from transformer_from_scratch.components.embedding import Embedding
from transformer_from_scratch.components.gelu import GELU
from transformer_from_scratch.components.layer_norm import LayerNorm
from transformer_from_scratch.components.learned import Learned
from transformer_from_scratch.components.multi_head import MultiHead
from transformer_from_scratch.components.post_norm import PostNorm
from transformer_from_scratch.components.pre_norm import PreNorm
from transformer_from_scratch.components.rotary import Rotary
from transformer_from_scratch.core.cache import LayerCache
from transformer_from_scratch.core.functional import (
    affine,
    causal_mask,
    dropout,
    gelu,
    no_weight_dropout,
)


class _Kernel(nn.Module):
    """Base for broken kernels: the textbook steps, each overridable (with the spec's dropout on
    the weights while training)."""

    def __init__(self, dims: tfs.Dims) -> None:
        super().__init__()
        self.dropout = dims.dropout

    def scores(self, q: Tensor, k: Tensor) -> Tensor:
        return q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])

    def hidden(self, qp: Tensor, kp: Tensor) -> Tensor:
        return causal_mask(qp, kp)

    def weights(self, scores: Tensor) -> Tensor:
        return torch.softmax(scores, dim=-1)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, query_positions: Tensor,
                key_positions: Tensor, score_bias: Tensor | None = None) -> Tensor:  # fmt: skip
        scores = self.scores(q, k)
        if score_bias is not None:
            scores = scores + score_bias
        scores = scores.masked_fill(self.hidden(query_positions, key_positions), float("-inf"))
        return dropout(self.weights(scores), self.dropout, self.training) @ v


class SeesOneFutureToken(_Kernel):
    """Masks from two positions ahead instead of one: each query sees the next key."""

    def hidden(self, qp: Tensor, kp: Tensor) -> Tensor:
        return (kp[None, :] - qp[:, None]) > 1


class CannotSeeItself(_Kernel):
    """Mask off by one: a query is hidden from its own key."""

    def hidden(self, qp: Tensor, kp: Tensor) -> Tensor:
        return (kp[None, :] - qp[:, None]) >= 0


class WrongScale(_Kernel):
    """Divides scores by d_head instead of sqrt(d_head)."""

    def scores(self, q: Tensor, k: Tensor) -> Tensor:
        return q @ k.transpose(-1, -2) / q.shape[-1]


class SoftmaxOverQueries(_Kernel):
    """Normalises over the query axis instead of the key axis."""

    def weights(self, scores: Tensor) -> Tensor:
        return torch.nan_to_num(torch.softmax(scores, dim=-2))


class MixesBatch(_Kernel):
    """Shares keys across the batch (averages them): samples leak into each other."""

    def scores(self, q: Tensor, k: Tensor) -> Tensor:
        return super().scores(q, k.mean(dim=0, keepdim=True).expand_as(k))


class OnlyWholeTiles(_Kernel):
    """Processes queries in tiles of 4 and forgets the ragged last tile (zeros there)."""

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, query_positions: Tensor,
                key_positions: Tensor, score_bias: Tensor | None = None) -> Tensor:  # fmt: skip
        out = super().forward(
            q,
            k,
            v,
            query_positions=query_positions,
            key_positions=key_positions,
            score_bias=score_bias,
        )
        whole = (q.shape[-2] // 4) * 4
        return torch.cat([out[..., :whole, :], torch.zeros_like(out[..., whole:, :])], dim=-2)


class _DropsOldest(LayerCache):
    def extend(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        all_keys, all_values = super().extend(keys, values)
        if all_keys.shape[-2] <= 4:
            return all_keys, all_values
        # "keep the cache small": silently drops the oldest entry
        kept = all_keys[..., 1:, :].clone(), all_values[..., 1:, :].clone()
        LayerCache.__init__(self)
        return super().extend(*kept)


class CacheDropsOldest(MultiHead):
    """Attention whose cache keeps only the most recent keys once it grows."""

    def forward(self, residual: Tensor, *, positional: tfs.PositionalEncoding, positions: Tensor,
                cache: LayerCache | None = None) -> Tensor:  # fmt: skip
        if cache is not None and not isinstance(cache, _DropsOldest):
            cache.__class__ = _DropsOldest
        return super().forward(residual, positional=positional, positions=positions, cache=cache)


class IgnoresPosition(tfs.PositionalEncoding):
    """Claims to be additive but gives every position the same learned vector."""

    def __init__(self, dims: tfs.Dims) -> None:
        super().__init__()
        self.vector = nn.Parameter(0.02 * torch.randn(dims.d_model))

    def embed(self, positions: Tensor) -> Tensor:
        return self.vector.expand(positions.shape[0], -1)


class NormOverPositions(LayerNorm):
    """Layer norm over the position axis instead of the feature axis."""

    def forward(self, residual: Tensor) -> Tensor:
        centred = residual - residual.mean(dim=-2, keepdim=True)
        scaled = centred * torch.rsqrt(centred.pow(2).mean(dim=-2, keepdim=True) + self.eps)
        return scaled * self.weight + (self.bias if self.bias is not None else 0)


class DeadParameter(GELU):
    """An MLP with a gate parameter it never uses in the forward pass."""

    def __init__(self, dims: tfs.Dims) -> None:
        super().__init__(dims)
        self.gate = nn.Parameter(torch.ones(dims.d_mlp))


class AlwaysFloat32(GELU):
    """Casts its output to float32 whatever the input's dtype."""

    def forward(self, residual: Tensor) -> Tensor:
        return super().forward(residual).float()


class DropoutInEval(GELU):
    """Applies dropout whether or not the module is in training mode."""

    def forward(self, residual: Tensor) -> Tensor:
        out = super().forward(residual)
        return out * (torch.rand_like(out) > 0.1) / 0.9


class TiedByCopy(nn.Module):
    """Declares 'tied' but clones the embedding's weight into a new Parameter."""

    def __init__(self, dims: tfs.Dims, embedding: nn.Module) -> None:
        super().__init__()
        assert isinstance(embedding, Embedding)
        self.weight = nn.Parameter(embedding.weight.detach().clone())

    def forward(self, residual: Tensor) -> Tensor:
        return residual @ self.weight.T


class _HalfKeyGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: object, keys: Tensor) -> Tensor:
        return keys.clone()

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> Tensor:
        return grad * 0.5  # a hand-written backward with a wrong factor


class WrongBackward(_Kernel):
    """A correct forward pass whose hand-written backward halves the keys' gradient."""

    def scores(self, q: Tensor, k: Tensor) -> Tensor:
        halved: Tensor = _HalfKeyGradient.apply(k)
        return super().scores(q, halved)


class TiledKernel(_Kernel):
    """Online softmax over key tiles of 128 (FlashAttention's forward), with or without rescaling.

    With ``rescale = False`` it forgets to rescale the running sums when a later tile raises the
    maximum: exact within one tile, wrong past it.
    """

    tile, rescale = 128, False

    @staticmethod
    def validate(dims: tfs.Dims, options: Mapping[str, Any]) -> list[str]:
        """No dropout: no tile holds a query's whole row of weights."""
        return no_weight_dropout("tiled", dims)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, query_positions: Tensor,
                key_positions: Tensor, score_bias: Tensor | None = None) -> Tensor:  # fmt: skip
        best = torch.full(q.shape[:-1], float("-inf"), dtype=q.dtype, device=q.device)
        total, acc = torch.zeros_like(best), torch.zeros_like(q)
        for s in range(0, k.shape[-2], self.tile):
            e = s + self.tile
            scores = self.scores(q, k[..., s:e, :])
            if score_bias is not None:
                scores = scores + score_bias[..., s:e]
            hidden = self.hidden(query_positions, key_positions[s:e])
            scores = scores.masked_fill(hidden, float("-inf"))
            new = torch.maximum(best, scores.amax(-1))
            safe = torch.where(torch.isinf(new), torch.zeros_like(new), new)
            probs = torch.exp(scores - safe[..., None])
            factor = torch.exp(best - safe) if self.rescale else torch.ones_like(safe)
            total = total * factor + probs.sum(-1)
            acc = acc * factor[..., None] + probs @ v[..., s:e, :]
            best = new
        return acc / total[..., None]


class ForgetsRescale(TiledKernel):
    """A tiled kernel whose running sums are never rescaled (see :class:`TiledKernel`)."""


class SingleQueryShortcut(_Kernel):
    """A "fast path" for one query (the decoding case) that forgets the 1/sqrt(d_head) scale."""

    def scores(self, q: Tensor, k: Tensor) -> Tensor:
        if q.shape[-2] == 1:
            return q @ k.transpose(-1, -2)
        return super().scores(q, k)


class IgnoresWindow(_Kernel):
    """Takes a ``window`` option and declares 'sliding_window', but never applies it."""

    def __init__(self, dims: tfs.Dims, window: int | None = None) -> None:
        super().__init__(dims)
        self.window = window


class WindowOffByOne(IgnoresWindow):
    """Each query sees ``window + 1`` keys instead of ``window``."""

    def hidden(self, qp: Tensor, kp: Tensor) -> Tensor:
        offset = qp[:, None] - kp[None, :]
        hidden = offset < 0
        return hidden if self.window is None else hidden | (offset > self.window)


class ApproxIgnoresBias(_Kernel):
    """An approximate kernel that declares 'score_bias' and drops the bias."""

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, query_positions: Tensor,
                key_positions: Tensor, score_bias: Tensor | None = None) -> Tensor:  # fmt: skip
        return super().forward(q, k, v, query_positions=query_positions,
                               key_positions=key_positions)  # fmt: skip


class ApproxDetachesValues(_Kernel):
    """An approximate kernel that detaches the values, so W_V never learns."""

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, query_positions: Tensor,
                key_positions: Tensor, score_bias: Tensor | None = None) -> Tensor:  # fmt: skip
        return super().forward(q, k, v.detach(), query_positions=query_positions,
                               key_positions=key_positions, score_bias=score_bias)  # fmt: skip


class PositionFromEnd(tfs.PositionalEncoding):
    """Learned position vectors counted back from the end of the sequence it is given.

    Within one full pass it looks right; fed one token at a time, every token is "the last".
    """

    def __init__(self, dims: tfs.Dims) -> None:
        super().__init__()
        self.table = nn.Parameter(0.5 * torch.randn(dims.n_ctx, dims.d_model))

    def embed(self, positions: Tensor) -> Tensor:
        return self.table[positions[-1] - positions]


class DropsCache(PreNorm):
    """A pre-norm block that never hands the KV cache on to its attention."""

    def forward(self, residual: Tensor, *, positional: tfs.PositionalEncoding, positions: Tensor,
                cache: LayerCache | None = None) -> Tensor:  # fmt: skip
        return super().forward(residual, positional=positional, positions=positions)


class NaiveSiLU(GELU):
    """SwiGLU's gate written as ``x * exp(x) / (1 + exp(x))``: overflows for large x."""

    def forward(self, residual: Tensor) -> Tensor:
        pre = affine(residual, self.W_in, self.b_in)
        return affine(pre * torch.exp(pre) / (1 + torch.exp(pre)), self.W_out, self.b_out)


class MovesToCPU(GELU):
    """Moves its output to the CPU (a habit from debugging): wrong on any GPU."""

    def forward(self, residual: Tensor) -> Tensor:
        return super().forward(residual).cpu()


class MakesTensorOnCPU(GELU):
    """Multiplies by a gate made with ``torch.ones(d)``, without ``device=``."""

    def forward(self, residual: Tensor) -> Tensor:
        return super().forward(residual) * torch.ones(residual.shape[-1], dtype=residual.dtype)


class DetachedValues(ApproxDetachesValues):
    """The same mistake in a kernel that declares itself exact: a correct forward pass."""


class LogDistanceBias(tfs.PositionalEncoding):
    """ALiBi written with ``log(distance)``: ``log(0)`` on the diagonal gives +inf and NaN."""

    def __init__(self, dims: tfs.Dims) -> None:
        super().__init__()
        self.n_heads = dims.n_heads

    def score_bias(self, query_positions: Tensor, key_positions: Tensor) -> Tensor:
        distance = (query_positions[:, None] - key_positions[None, :]).float()
        return -torch.log(distance.clamp_min(0))[None].expand(self.n_heads, -1, -1)


# (kind, name, factory, capabilities, checks that must catch it)
BROKEN = [
    ("attention_kernel", "sees_one_future_token", SeesOneFutureToken, ["exact", "kv_cache"], {"check_causal_by_perturbation", "check_causal_by_gradient", "check_matches_reference", "check_decoder_causal"}),
    ("attention_kernel", "cannot_see_itself", CannotSeeItself, ["exact", "kv_cache"], {"check_matches_reference", "check_finite"}),
    ("attention_kernel", "wrong_scale", WrongScale, ["exact", "kv_cache"], {"check_matches_reference"}),
    ("attention_kernel", "softmax_over_queries", SoftmaxOverQueries, ["exact", "kv_cache"], {"check_matches_reference"}),
    ("attention_kernel", "mixes_batch", MixesBatch, ["exact", "kv_cache"], {"check_batch_independent", "check_matches_reference"}),
    ("attention_kernel", "only_whole_tiles", OnlyWholeTiles, ["exact", "kv_cache"], {"check_matches_reference"}),
    ("attention_kernel", "wrong_backward", WrongBackward, ["exact", "kv_cache"], {"check_gradients_match_reference"}),
    ("attention", "cache_drops_oldest", CacheDropsOldest, ["kv_cache", "rotary", "score_bias"], {"check_kv_cache_matches_full_forward"}),
    ("positional", "ignores_position", IgnoresPosition, ["additive"], {"check_distinct_positions", "check_position_reaches_model"}),
    ("norm", "norm_over_positions", NormOverPositions, ["zero_mean", "unit_rms", "scale_invariant", "shift_invariant"], {"check_normalises", "check_decoder_causal", "check_position_wise"}),
    ("mlp", "dead_parameter", DeadParameter, [], {"check_gradient_reaches_every_parameter"}),
    ("mlp", "always_float32", AlwaysFloat32, [], {"check_float64"}),
    ("mlp", "dropout_in_eval", DropoutInEval, [], {"check_eval_deterministic"}),
    ("unembedding", "tied_by_copy", TiedByCopy, ["tied"], {"check_tied_shares_tensor"}),
    # Issue 9: each caught by a check that the suite did not have before.
    ("positional", "position_from_end", PositionFromEnd, ["additive"], {"check_decoder_kv_cache", "check_decoder_prefix_stable"}),
    ("block", "drops_cache", DropsCache, ["identity_path"], {"check_decoder_kv_cache"}),
    ("attention_kernel", "single_query_shortcut", SingleQueryShortcut, ["exact", "kv_cache"], {"check_kv_cache_matches_full_forward", "check_decoder_kv_cache"}),
    ("attention_kernel", "forgets_rescale", ForgetsRescale, ["exact", "kv_cache", "score_bias"], {"check_matches_reference"}),
    ("attention_kernel", "ignores_window", IgnoresWindow, ["exact", "kv_cache", "sliding_window"], {"check_matches_reference", "check_gradients_match_reference"}),
    ("attention_kernel", "window_off_by_one", WindowOffByOne, ["exact", "kv_cache", "sliding_window"], {"check_matches_reference"}),
    ("attention_kernel", "approx_ignores_bias", ApproxIgnoresBias, ["kv_cache", "score_bias"], {"check_score_bias_changes_output"}),
    ("attention_kernel", "approx_detaches_values", ApproxDetachesValues, ["kv_cache"], {"check_gradient_reaches_inputs"}),
    ("attention_kernel", "detached_values", DetachedValues, ["exact", "kv_cache"], {"check_gradient_reaches_inputs", "check_gradients_match_reference"}),
    ("mlp", "naive_silu", NaiveSiLU, [], {"check_finite_at_scale"}),
    ("mlp", "moves_to_cpu", MovesToCPU, [], {"check_follows_device"}),
    ("mlp", "makes_tensor_on_cpu", MakesTensorOnCPU, [], {"check_follows_device"}),
    ("positional", "log_distance_bias", LogDistanceBias, ["score_bias"], {"check_finite", "check_combinations"}),
]  # fmt: skip


class NoGradMLP(GELU):
    """Computes its output under torch.no_grad() (a habit from evaluation code)."""

    def forward(self, residual: Tensor) -> Tensor:
        with torch.no_grad():
            return super().forward(residual)


BROKEN.append(("mlp", "no_grad_mlp", NoGradMLP, [], {"check_gradient_reaches_every_parameter"}))  # fmt: skip


# Issue 12: hook points, each caught by a hook check.
class SkipsHookPost(GELU):
    """Has the hook points its kind owes, but never calls ``hook_post``."""

    def forward(self, residual: Tensor) -> Tensor:
        pre = self.hook_pre(affine(residual, self.W_in, self.b_in))
        return affine(tfs.core.functional.gelu(pre), self.W_out, self.b_out)


class HooksACopy(GELU):
    """Shows ``hook_pre`` a copy and goes on with the original, so a patch does nothing."""

    def forward(self, residual: Tensor) -> Tensor:
        pre = affine(residual, self.W_in, self.b_in)
        self.hook_pre(pre.clone())
        hidden = self.hook_post(tfs.core.functional.gelu(pre))
        return affine(hidden, self.W_out, self.b_out)


class NoHookPoints(nn.Module):
    """A correct RMS-style norm that knows nothing of hook points."""

    def __init__(self, dims: tfs.Dims) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dims.d_model))

    def forward(self, residual: Tensor) -> Tensor:
        return residual * torch.rsqrt(residual.square().mean(-1, keepdim=True) + 1e-6) * self.weight


class ClaimsResidMid(PreNorm):
    """Declares ``resid_mid`` but adds attention and MLP in one line, with no stream between."""

    def forward(self, residual: Tensor, *, positional: tfs.PositionalEncoding, positions: Tensor,
                cache: LayerCache | None = None) -> Tensor:  # fmt: skip
        attended = self.attention(self.norm_attention(residual), positional=positional,
                                  positions=positions, cache=cache)  # fmt: skip
        out: Tensor = residual + attended + self.mlp(self.norm_mlp(residual + attended))
        return out


class WindowUnderAnotherName(_Kernel):
    """A correct windowed kernel that keeps its window as ``self.span``: the pattern read
    through hooks (which looks for ``self.window``) would not be what it computes."""

    def __init__(self, dims: tfs.Dims, window: int | None = None) -> None:
        super().__init__(dims)
        self.span = window

    def hidden(self, qp: Tensor, kp: Tensor) -> Tensor:
        return causal_mask(qp, kp, self.span)


BROKEN += [
    ("mlp", "skips_hook_post", SkipsHookPost, [], {"check_hooks_fire"}),
    ("mlp", "hooks_a_copy", HooksACopy, [], {"check_hooks_are_live"}),
    ("norm", "no_hook_points", NoHookPoints, ["unit_rms", "scale_invariant"], {"check_hooks_fire", "check_hooks_are_live"}),
    ("block", "claims_resid_mid", ClaimsResidMid, ["identity_path", "resid_mid"], {"check_hooks_fire"}),
    ("attention_kernel", "window_under_another_name", WindowUnderAnotherName, ["exact", "kv_cache", "sliding_window"], {"check_hooks_fire"}),
]  # fmt: skip


# Session 9: position-wise kinds.
class RunningMeanMLP(GELU):
    """Adds the running mean of the residual stream over earlier positions: causal, so no
    causality check objects, but an MLP must act on each position alone."""

    def forward(self, residual: Tensor) -> Tensor:
        count = torch.arange(1, residual.shape[1] + 1, device=residual.device)[:, None]
        out: Tensor = super().forward(residual) + residual.cumsum(1) / count
        return out


class PreviousTokenEmbedding(nn.Module):
    """Embeds each token plus half of the previous one's vector (a bigram trick that belongs in
    attention: the embedding must look at its own token only)."""

    def __init__(self, dims: tfs.Dims) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(dims.d_vocab, dims.d_model) * 0.02)

    def forward(self, tokens: Tensor) -> Tensor:
        vectors = self.weight[tokens]
        shifted = torch.cat([torch.zeros_like(vectors[:, :1]), vectors[:, :-1]], dim=1)
        return vectors + 0.5 * shifted


class FirstPositionMLP(GELU):
    """Adds the first position's input to every position (an "attention sink" by hand): causal,
    and no change at a middle position shows it; only changing the first one does."""

    def forward(self, residual: Tensor) -> Tensor:
        out: Tensor = super().forward(residual) + residual[:, :1]
        return out


BROKEN += [
    ("mlp", "running_mean_mlp", RunningMeanMLP, [], {"check_position_wise"}),
    ("mlp", "first_position_mlp", FirstPositionMLP, [], {"check_position_wise"}),
    ("embedding", "previous_token_embedding", PreviousTokenEmbedding, [], {"check_position_wise"}),
]  # fmt: skip


# Session 10: parts that compute the right thing in one way of calling them only.
class AddsIntoItsInput(GELU):
    """Writes its output into the buffer of its input when no gradient is tracked ("saves an
    allocation while generating"): the caller's tensor is gone."""

    def forward(self, residual: Tensor) -> Tensor:
        out: Tensor = super().forward(residual)
        if torch.is_grad_enabled():
            return out
        return residual.copy_(out)


class MasksIntoTheBias(_Kernel):
    """Masks by writing ``-inf`` into the score bias it was given when no gradient is tracked: its
    own output is right, and the bias, which every layer may share, is spoiled."""

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, query_positions: Tensor,
                key_positions: Tensor, score_bias: Tensor | None = None) -> Tensor:  # fmt: skip
        hidden = self.hidden(query_positions, key_positions)
        if score_bias is None or torch.is_grad_enabled():
            return super().forward(q, k, v, query_positions=query_positions,
                                   key_positions=key_positions, score_bias=score_bias)  # fmt: skip
        masked = score_bias.masked_fill_(hidden, float("-inf"))
        return self.weights(self.scores(q, k) + masked) @ v


class ScalesInEval(GELU):
    """Multiplies its output by 0.9 in evaluation mode (dropout's scaling put on the wrong side,
    and kept with dropout off)."""

    def forward(self, residual: Tensor) -> Tensor:
        out: Tensor = super().forward(residual)
        return out if self.training else 0.9 * out


class BatchStatisticsNorm(LayerNorm):
    """Takes its mean and variance over the batch as well while training (batch norm's habit)."""

    def forward(self, residual: Tensor) -> Tensor:
        if not self.training:
            return super().forward(residual)
        axes = (0, -1)
        centred = residual - residual.mean(axes, keepdim=True)
        scale = self.hook_scale((centred.square().mean(axes, keepdim=True) + self.eps).sqrt())
        out = self.hook_normalized(centred / scale) * self.weight
        return out if self.bias is None else out + self.bias


class OnePassVarianceNorm(LayerNorm):
    """Layer norm with the variance as ``mean(x^2) - mean(x)^2``: right on paper, rounded away
    in float32 when the input has a large offset."""

    def forward(self, residual: Tensor) -> Tensor:
        mean = residual.mean(-1, keepdim=True)
        variance = residual.square().mean(-1, keepdim=True) - mean.square()
        scale = self.hook_scale((variance + self.eps).sqrt())
        out = self.hook_normalized((residual - mean) / scale) * self.weight
        return out if self.bias is None else out + self.bias


_NORM_CAPABILITIES = ["zero_mean", "unit_rms", "scale_invariant", "shift_invariant"]
BROKEN += [
    ("mlp", "adds_into_its_input", AddsIntoItsInput, [], {"check_leaves_inputs_alone"}),
    ("attention_kernel", "masks_into_the_bias", MasksIntoTheBias, ["exact", "kv_cache", "score_bias"], {"check_leaves_inputs_alone"}),
    ("mlp", "scales_in_eval", ScalesInEval, [], {"check_train_eval_agree"}),
    ("norm", "batch_statistics_norm", BatchStatisticsNorm, _NORM_CAPABILITIES, {"check_train_eval_agree"}),
    ("norm", "one_pass_variance_norm", OnePassVarianceNorm, _NORM_CAPABILITIES, {"check_norm_invariances"}),
]  # fmt: skip


# Sizes written into the code: right at the tiny sizes every other check uses, wrong elsewhere.
class ScaleAsANumber(_Kernel):
    """Scales the scores by 0.35355 (1/sqrt(8), computed once for heads of width 8)."""

    def scores(self, q: Tensor, k: Tensor) -> Tensor:
        return q @ k.transpose(-1, -2) * 0.35355


class MeanOverSixteen(LayerNorm):
    """Takes the mean as ``sum / 16`` (the width of the model it was first written for)."""

    def forward(self, residual: Tensor) -> Tensor:
        centred = residual - residual.sum(-1, keepdim=True) / 16
        scale = self.hook_scale((centred.square().sum(-1, keepdim=True) / 16 + self.eps).sqrt())
        out = self.hook_normalized(centred / scale) * self.weight
        return out if self.bias is None else out + self.bias


BROKEN += [
    ("attention_kernel", "scale_as_a_number", ScaleAsANumber, ["exact", "kv_cache"], {"check_other_sizes"}),
    ("norm", "mean_over_sixteen", MeanOverSixteen, _NORM_CAPABILITIES, {"check_other_sizes"}),
]  # fmt: skip


def _attention_forward(
    ctx: Any, q: Tensor, k: Tensor, v: Tensor, hidden: Tensor, bias: Tensor | None
) -> Tensor:
    """Softmax attention, saving what a hand-written backward needs (the weights as they come)."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if bias is not None:
        scores = scores + bias
    weights = torch.softmax(scores.masked_fill(hidden, float("-inf")), dim=-1)
    ctx.save_for_backward(q, k, v, weights)
    return weights @ v


def _attention_backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
    """The gradients of :func:`_attention_forward`'s inputs (the bias's when it needs one)."""
    q, k, v, weights = ctx.saved_tensors
    scale = 1 / math.sqrt(q.shape[-1])
    d_weights = grad @ v.transpose(-1, -2)
    d_scores = weights * (d_weights - (d_weights * weights).sum(-1, keepdim=True))
    d_bias = d_scores.sum(0) if ctx.needs_input_grad[4:5] == (True,) else None
    return (d_scores @ k * scale, d_scores.transpose(-1, -2) @ q * scale,
            weights.transpose(-1, -2) @ grad, None, d_bias)  # fmt: skip


class _ReadsGradientAsContiguous(torch.autograd.Function):
    """Softmax attention with its backward written out, reading the output's gradient through
    fixed row-major strides (as a hand-written kernel reading by pointer would)."""

    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor, hidden: Tensor) -> Tensor:
        return _attention_forward(ctx, q, k, v, hidden, None)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        grad = grad.as_strided(grad.shape, torch.empty(grad.shape).stride())  # the mistake
        return _attention_backward(ctx, grad)[:4]


class ContiguousGradientOnly(_Kernel):
    """A hand-written backward right for a contiguous output gradient only; a decoder sends a
    transposed view (the heads joined back), so it trains on scrambled gradients."""

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, query_positions: Tensor,
                key_positions: Tensor, score_bias: Tensor | None = None) -> Tensor:  # fmt: skip
        hidden = self.hidden(query_positions, key_positions)
        out: Tensor = _ReadsGradientAsContiguous.apply(q, k, v, hidden)
        return out


BROKEN += [
    ("attention_kernel", "contiguous_gradient_only", ContiguousGradientOnly, ["exact", "kv_cache"], {"check_gradients_match_reference"}),
]  # fmt: skip


class _GELUWithoutItsSecondTerm(torch.autograd.Function):
    """GELU, ``x Phi(x)``, whose hand-written derivative keeps ``Phi(x)`` and forgets
    ``x phi(x)``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


class HalfDerivedGELU(GELU):
    """An MLP whose GELU has a hand-written backward missing a term: it still learns, slower,
    and its forward pass is exact."""

    def forward(self, residual: Tensor) -> Tensor:
        pre = self.hook_pre(affine(residual, self.W_in, self.b_in))
        hidden = self.hook_post(_GELUWithoutItsSecondTerm.apply(pre))
        return affine(hidden, self.W_out, self.b_out)


BROKEN += [
    ("mlp", "half_derived_gelu", HalfDerivedGELU, [], {"check_backward_is_derivative"}),
]  # fmt: skip


# Parts right at initialisation only, where every bias is zero: the mode checks move the
# parameters off their initial values first.
class FastPathWithoutBias(GELU):
    """Takes a "fast path" when no gradient is tracked (generation), which leaves out
    ``b_out``: the model samples from a function it never trained."""

    def forward(self, residual: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            return super().forward(residual)
        pre = self.hook_pre(affine(residual, self.W_in, self.b_in))
        return self.hook_post(gelu(pre)) @ self.W_out


class EvalWithoutBias(GELU):
    """Adds ``b_out`` in training mode only."""

    def forward(self, residual: Tensor) -> Tensor:
        pre = self.hook_pre(affine(residual, self.W_in, self.b_in))
        hidden = self.hook_post(gelu(pre))
        return affine(hidden, self.W_out, self.b_out if self.training else None)


BROKEN += [
    ("mlp", "fast_path_without_bias", FastPathWithoutBias, [], {"check_grad_modes_agree"}),
    ("mlp", "eval_without_bias", EvalWithoutBias, [], {"check_train_eval_agree"}),
]  # fmt: skip


class CacheWithoutOutputBias(MultiHead):
    """Multi-head attention with biases whose cached path (generation) leaves out ``b_O``:
    invisible while the bias is still zero, as it is at initialisation."""

    def __init__(self, dims: tfs.Dims, kernel: nn.Module, bias: bool = True) -> None:
        super().__init__(dims, kernel, bias=bias)

    def forward(self, residual: Tensor, *, positional: tfs.PositionalEncoding, positions: Tensor,
                cache: LayerCache | None = None) -> Tensor:  # fmt: skip
        out = super().forward(residual, positional=positional, positions=positions, cache=cache)
        return out if cache is None or self.b_O is None else out - self.b_O


BROKEN += [
    ("attention", "cache_without_output_bias", CacheWithoutOutputBias, ["kv_cache", "rotary", "score_bias"], {"check_kv_cache_matches_full_forward", "check_decoder_kv_cache"}),
]  # fmt: skip


class TokenShiftMLP(GELU):
    """Mixes the previous position's input in by a learned weight per feature (RWKV's "token
    shift", which belongs in attention or a block that declares it) that starts at zero: an
    MLP that acts on each position alone until its first step of training."""

    def __init__(self, dims: tfs.Dims) -> None:
        super().__init__(dims)
        self.mix = nn.Parameter(torch.zeros(dims.d_model))

    def forward(self, residual: Tensor) -> Tensor:
        previous = torch.cat([torch.zeros_like(residual[:, :1]), residual[:, :-1]], dim=1)
        out: Tensor = super().forward(residual + self.mix * previous)
        return out


BROKEN += [
    ("mlp", "token_shift_mlp", TokenShiftMLP, [], {"check_position_wise"}),
]  # fmt: skip


class HiddenSizedByWidth(GELU):
    """Reads only the first ``d_model`` hidden units (sized by the wrong dimension): the rest of
    ``W_in``, ``b_in`` and ``W_out`` is never used, and any loss still falls."""

    def forward(self, residual: Tensor) -> Tensor:
        width = residual.shape[-1]
        hidden = self.hook_post(gelu(self.hook_pre(affine(residual, self.W_in, self.b_in))))
        return hidden[..., :width] @ self.W_out[:width] + self.b_out


class PaddingRowEmbedding(Embedding):
    """Zeroes token 0's vector, as if it were padding (GPT-2 has no padding id): that row of
    the table never learns."""

    def forward(self, tokens: Tensor) -> Tensor:
        return self.weight[tokens] * (tokens != 0)[..., None]


class GPT2SizedTable(tfs.PositionalEncoding):
    """A learned position table of GPT-2's 1024 rows whatever ``n_ctx``: rows past ``n_ctx``
    never learn (and positions past 1023 fail)."""

    def __init__(self, dims: tfs.Dims) -> None:
        super().__init__()
        self.weight = nn.Parameter(0.01 * torch.randn(1024, dims.d_model))

    def embed(self, positions: Tensor) -> Tensor:
        return self.weight[positions]


class NoEpsilonNorm(LayerNorm):
    """Layer norm dividing by the standard deviation with no epsilon: a constant or zero
    vector (a padding position) gives 0 / 0."""

    def forward(self, residual: Tensor) -> Tensor:
        centred = residual - residual.mean(-1, keepdim=True)
        scale = self.hook_scale(centred.pow(2).mean(-1, keepdim=True).sqrt())
        return self.hook_normalized(centred / scale) * self.weight + self.bias


BROKEN += [
    ("mlp", "hidden_sized_by_width", HiddenSizedByWidth, [], {"check_gradient_reaches_every_parameter"}),
    ("embedding", "padding_row_embedding", PaddingRowEmbedding, [], {"check_gradient_reaches_every_parameter"}),
    ("positional", "gpt2_sized_table", GPT2SizedTable, ["additive"], {"check_far_positions"}),
    ("norm", "no_epsilon_norm", NoEpsilonNorm, ["zero_mean", "unit_rms", "scale_invariant", "shift_invariant"], {"check_finite_on_small_inputs"}),
]  # fmt: skip


class DropoutWithoutRescale(PreNorm):
    """Drops sublayer outputs while training but never scales the rest by 1 / (1 - p): the
    model trains on outputs (1 - p) times smaller than it is evaluated on."""

    def _drop(self, update: Tensor) -> Tensor:
        if not self.training or not self.dropout:
            return update
        return update * (torch.rand_like(update) >= self.dropout)


class DropoutAsKeepProbability(_Kernel):
    """Reads the spec's dropout as the probability of keeping a weight: still unbiased, but at
    dropout 0.1 it drops nine weights in ten."""

    def __init__(self, dims: tfs.Dims) -> None:
        super().__init__(dims)
        self.keep, self.dropout = dims.dropout, 0.0

    def weights(self, scores: Tensor) -> Tensor:
        weights = torch.softmax(scores, dim=-1)
        if not self.training or not self.keep:
            return weights
        return weights * (torch.rand_like(weights) < self.keep) / self.keep


BROKEN += [
    ("block", "dropout_without_rescale", DropoutWithoutRescale, ["identity_path", "resid_mid"], {"check_dropout_while_training"}),
    ("attention_kernel", "dropout_as_keep_probability", DropoutAsKeepProbability, ["exact", "kv_cache", "score_bias"], {"check_dropout_while_training"}),
]  # fmt: skip


class AnglesInInputDtype(Rotary):
    """Rotary embedding computing its angles on the fly in the queries' dtype: exact in
    float32, but bfloat16 holds position 5003 as 4992, so long contexts turn by wrong angles."""

    def rotate(self, x: Tensor, positions: Tensor) -> Tensor:
        width = self.rotated
        frequencies = 10000.0 ** -(torch.arange(0, width, 2, dtype=x.dtype) / width)
        angles = positions.to(x.dtype)[:, None] * frequencies
        angles = torch.cat([angles, angles], dim=-1)
        first, second = x[..., :width].chunk(2, dim=-1)
        turned = x[..., :width] * angles.cos() + torch.cat([-second, first], -1) * angles.sin()
        return torch.cat([turned, x[..., width:]], dim=-1)


class TableOf2048(Rotary):
    """Rotary embedding with a cos/sin table of 2048 positions whatever ``n_ctx``."""

    def __init__(self, dims: tfs.Dims) -> None:
        super().__init__(attrs.evolve(dims, n_ctx=2048))


class ClampedAt1023(Learned):
    """Learned positions read at ``min(position, 1023)``, GPT-2's last: past it every position
    looks the same."""

    def embed(self, positions: Tensor) -> Tensor:
        return self.weight[positions.clamp(max=1023)]


class MaskBufferOf2048(_Kernel):
    """A causal mask kept as a 2048 x 2048 buffer (as nanoGPT keeps its block size's), read at
    the positions given: fine until position 2048."""

    def __init__(self, dims: tfs.Dims) -> None:
        super().__init__(dims)
        allowed = torch.ones(2048, 2048, dtype=torch.bool).tril()
        self.register_buffer("allowed", allowed, persistent=False)

    def hidden(self, qp: Tensor, kp: Tensor) -> Tensor:
        return ~self.allowed[qp][:, kp]


BROKEN += [
    ("positional", "angles_in_input_dtype", AnglesInInputDtype, ["rotary"], {"check_far_positions"}),
    ("positional", "table_of_2048", TableOf2048, ["rotary"], {"check_far_positions"}),
    ("positional", "clamped_at_1023", ClampedAt1023, ["additive"], {"check_far_positions"}),
    ("attention_kernel", "mask_buffer_of_2048", MaskBufferOf2048, ["exact", "kv_cache", "score_bias"], {"check_far_positions"}),
]  # fmt: skip


class HeadWidthFromModelWidth(_Kernel):
    """Scales scores by ``1/sqrt(d_model // n_heads)``, which is ``d_head`` only when the heads
    together are exactly as wide as the model (GPT-2's sizes, not a rule of the contract)."""

    def __init__(self, dims: tfs.Dims) -> None:
        super().__init__(dims)
        self.scale = 1 / math.sqrt(dims.d_model // dims.n_heads)

    def scores(self, q: Tensor, k: Tensor) -> Tensor:
        return q @ k.transpose(-1, -2) * self.scale


BROKEN += [
    ("attention_kernel", "head_width_from_model_width", HeadWidthFromModelWidth, ["exact", "kv_cache", "score_bias"], {"check_other_sizes"}),
]  # fmt: skip


class SeedsItsDropout(PreNorm):
    """Reseeds torch's generator before each dropout mask "for reproducibility": every step
    drops the same entries, and every later draw of the run repeats too."""

    def _drop(self, update: Tensor) -> Tensor:
        if self.training and self.dropout:
            torch.manual_seed(1234)
        return dropout(update, self.dropout, self.training)


class ReseedsInForward(GELU):
    """Calls ``torch.manual_seed`` in its forward pass "for reproducibility": harmless to its
    own output, but the data order and dropout of the whole run now repeat every step."""

    def forward(self, residual: Tensor) -> Tensor:
        torch.manual_seed(1234)
        return super().forward(residual)


BROKEN += [
    ("block", "seeds_its_dropout", SeedsItsDropout, ["identity_path", "resid_mid"], {"check_dropout_while_training"}),
    ("mlp", "reseeds_in_forward", ReseedsInForward, [], {"check_eval_deterministic"}),
]  # fmt: skip


class BiasBeforeNormalising(LayerNorm):
    """Layer norm adding its bias before normalising (``LN(x + b) * g``): while the bias is
    zero, as at initialisation, nothing shows; once trained, scaling the input changes the
    output."""

    def forward(self, residual: Tensor) -> Tensor:
        shifted = residual + self.bias
        centred = shifted - shifted.mean(-1, keepdim=True)
        scale = self.hook_scale((centred.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(centred / scale) * self.weight


class GainBeforeNormalising(LayerNorm):
    """Layer norm multiplying by its gain before normalising (``LN(x * g) + b``): while the
    gain is one nothing shows; once trained, shifting the input changes the output."""

    def forward(self, residual: Tensor) -> Tensor:
        scaled = residual * self.weight
        centred = scaled - scaled.mean(-1, keepdim=True)
        scale = self.hook_scale((centred.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(centred / scale) + self.bias


BROKEN += [
    ("norm", "bias_before_normalising", BiasBeforeNormalising, ["zero_mean", "unit_rms", "scale_invariant", "shift_invariant"], {"check_norm_invariances"}),
    ("norm", "gain_before_normalising", GainBeforeNormalising, ["zero_mean", "unit_rms", "scale_invariant", "shift_invariant"], {"check_norm_invariances"}),
]  # fmt: skip


class DetachesScoreBias(_Kernel):
    """Adds the score bias detached (``score_bias.detach()``, "it is only positions"): a
    learned bias, such as T5's relative-position buckets, would silently never train."""

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, query_positions: Tensor,
                key_positions: Tensor, score_bias: Tensor | None = None) -> Tensor:  # fmt: skip
        fixed = None if score_bias is None else score_bias.detach()
        return super().forward(q, k, v, query_positions=query_positions,
                               key_positions=key_positions, score_bias=fixed)  # fmt: skip


BROKEN += [
    ("attention_kernel", "detaches_score_bias", DetachesScoreBias, ["exact", "kv_cache", "score_bias"], {"check_gradients_match_reference"}),
]  # fmt: skip


class IgnoresKeyValueHeads(MultiHead):
    """Multi-head attention that gives keys and values as many heads as queries whatever
    ``n_kv_heads``: it works, but the spec's grouped-query attention (its smaller KV cache and
    its checkpoints' shapes) silently is not there."""

    def __init__(self, dims: tfs.Dims, kernel: nn.Module) -> None:
        super().__init__(attrs.evolve(dims, n_kv_heads=dims.n_heads), kernel)


BROKEN += [
    ("attention", "ignores_key_value_heads", IgnoresKeyValueHeads, ["kv_cache", "rotary", "score_bias"], {"check_other_sizes"}),
]  # fmt: skip


class ReluInPlaceAfterHook(GELU):
    """A ReLU MLP applying ``torch.relu_`` to the tensor ``hook_pre`` just passed on: the
    model is right, but ``run_with_cache`` then shows the pre-activations already clipped."""

    def forward(self, residual: Tensor) -> Tensor:
        pre = self.hook_pre(affine(residual, self.W_in, self.b_in))
        return affine(self.hook_post(torch.relu_(pre)), self.W_out, self.b_out)


BROKEN += [
    ("mlp", "relu_in_place_after_hook", ReluInPlaceAfterHook, [], {"check_hooks_fire"}),
]  # fmt: skip


def _read_as_contiguous(x: Tensor) -> Tensor:
    """``x``'s memory read with the strides a contiguous tensor of its shape would have (what
    a hand-written kernel does when it takes a pointer and assumes row-major order)."""
    strides = [1]
    for size in reversed(x.shape[1:]):
        strides.insert(0, strides[0] * size)
    return torch.as_strided(x, x.shape, strides, x.storage_offset())


class AssumesContiguousInputs(_Kernel):
    """Reads queries, keys and values as if they were contiguous: right in a test with fresh
    tensors, scrambled in a decoder, which sends them as transposed views."""

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, query_positions: Tensor,
                key_positions: Tensor, score_bias: Tensor | None = None) -> Tensor:  # fmt: skip
        q, k, v = (_read_as_contiguous(x) for x in (q, k, v))
        return super().forward(q, k, v, query_positions=query_positions,
                               key_positions=key_positions, score_bias=score_bias)  # fmt: skip


BROKEN += [
    ("attention_kernel", "assumes_contiguous_inputs", AssumesContiguousInputs, ["exact", "kv_cache", "score_bias"], {"check_matches_reference", "check_decoder_kv_cache"}),
]  # fmt: skip


class OneHotInWeightDtype(Embedding):
    """An embedding written as a one-hot matrix product, the one-hot built by comparing ids
    with ``arange`` in the weights' dtype: exact in float32, but in bfloat16 token 50,255 is
    50,176, and its one-hot row holds a one for every id that rounds the same way."""

    def forward(self, tokens: Tensor) -> Tensor:
        ids = torch.arange(self.weight.shape[0], dtype=self.weight.dtype, device=tokens.device)
        hot = (tokens[..., None].to(self.weight.dtype) == ids).to(self.weight.dtype)
        return hot @ self.weight


class DropoutMaskSharedByHeads(_Kernel):
    """Draws one dropout mask per sample and broadcasts it over the heads (a mask of shape
    ``[batch, 1, query, key]``, to save random numbers): unbiased, at the right rate, but every
    head loses the same weights."""

    def weights(self, scores: Tensor) -> Tensor:
        weights = torch.softmax(scores, dim=-1)
        if not self.training or not self.dropout:
            return weights
        shape = (weights.shape[0], 1, *weights.shape[2:])
        keep = torch.rand(shape, device=weights.device) >= self.dropout
        return weights * keep / (1 - self.dropout)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, query_positions: Tensor,
                key_positions: Tensor, score_bias: Tensor | None = None) -> Tensor:  # fmt: skip
        scores = self.scores(q, k)
        if score_bias is not None:
            scores = scores + score_bias
        scores = scores.masked_fill(self.hidden(query_positions, key_positions), float("-inf"))
        return self.weights(scores) @ v


class DropsTheResidualStream(PreNorm):
    """Drops the residual stream after each addition (``dropout(x + f(x))``) instead of what
    the sublayer adds: still unbiased, but every layer cuts the skip path at random."""

    def forward(self, residual: Tensor, *, positional: tfs.PositionalEncoding, positions: Tensor,
                cache: LayerCache | None = None) -> Tensor:  # fmt: skip
        normed = self.norm_attention(residual)
        attended = self.attention(normed, positional=positional, positions=positions, cache=cache)
        residual = self.hook_resid_mid(self._drop(residual + attended))
        return self._drop(residual + self.mlp(self.norm_mlp(residual)))


class _QueriesOnly(tfs.PositionalEncoding):
    """Passes on a positional encoding's rotation for queries (every first call of a pair)
    and leaves keys unturned."""

    def __init__(self, inner: tfs.PositionalEncoding) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def rotate(self, x: Tensor, positions: Tensor) -> Tensor:
        self.calls += 1
        return self.inner.rotate(x, positions) if self.calls % 2 else x

    def score_bias(self, query_positions: Tensor, key_positions: Tensor) -> Tensor | None:
        return self.inner.score_bias(query_positions, key_positions)


class RotatesQueriesOnly(MultiHead):
    """Applies the rotary turn to the queries but not the keys: position still reaches the
    scores, so the model trains, but they depend on where the query is, not how far back the
    key is."""

    def forward(self, residual: Tensor, *, positional: tfs.PositionalEncoding, positions: Tensor,
                cache: LayerCache | None = None) -> Tensor:  # fmt: skip
        return super().forward(residual, positional=_QueriesOnly(positional),
                               positions=positions, cache=cache)  # fmt: skip


class NormalisesWeightsInForward(GELU):
    """Scales each column of ``W_in`` to unit length in place at every forward pass ("weight
    normalisation"): the model runs, but the optimizer's step is undone behind its back and a
    checkpoint holds other weights than the ones the step produced."""

    def forward(self, residual: Tensor) -> Tensor:
        with torch.no_grad():
            self.W_in.div_(self.W_in.norm(dim=0, keepdim=True))
        return super().forward(residual)


class ReusesOutputBuffer(_Kernel):
    """Writes every result into one output buffer it keeps (to save allocations) when no
    gradient is needed: the previous call's output, which a caller may still hold, changes."""

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, query_positions: Tensor,
                key_positions: Tensor, score_bias: Tensor | None = None) -> Tensor:  # fmt: skip
        out = super().forward(q, k, v, query_positions=query_positions,
                              key_positions=key_positions, score_bias=score_bias)  # fmt: skip
        if torch.is_grad_enabled():
            return out
        kept: Tensor | None = getattr(self, "kept", None)
        if kept is None or kept.shape != out.shape or kept.dtype != out.dtype:
            kept = self.kept = torch.empty_like(out)
        return kept.copy_(out)


class KeepsLastActivation(GELU):
    """Keeps its hidden activation in a buffer "for plotting" and fires ``hook_post`` on that
    buffer: right outputs, but a ``run_with_cache`` cache is overwritten by the next run."""

    def forward(self, residual: Tensor) -> Tensor:
        pre = self.hook_pre(affine(residual, self.W_in, self.b_in))
        last: Tensor | None = getattr(self, "last", None)
        if last is None or last.shape != pre.shape:
            last = self.last = torch.empty_like(pre.detach())
        last.copy_(gelu(pre).detach())
        post = self.hook_post(last if not torch.is_grad_enabled() else gelu(pre))
        return affine(post, self.W_out, self.b_out)


BROKEN += [
    ("embedding", "one_hot_in_weight_dtype", OneHotInWeightDtype, [], {"check_far_token_ids"}),
    ("attention_kernel", "dropout_mask_shared_by_heads", DropoutMaskSharedByHeads, ["exact", "kv_cache", "score_bias"], {"check_dropout_while_training"}),
    ("block", "drops_the_residual_stream", DropsTheResidualStream, ["identity_path", "resid_mid"], {"check_dropout_while_training"}),
    ("attention", "rotates_queries_only", RotatesQueriesOnly, ["kv_cache", "rotary", "score_bias"], {"check_shift_invariant"}),
    ("mlp", "normalises_weights_in_forward", NormalisesWeightsInForward, [], {"check_leaves_inputs_alone"}),
    ("attention_kernel", "reuses_output_buffer", ReusesOutputBuffer, ["exact", "kv_cache", "score_bias"], {"check_eval_deterministic"}),
    ("mlp", "keeps_last_activation", KeepsLastActivation, [], {"check_activations_belong_to_the_run"}),
]  # fmt: skip


class _RotationOnly(tfs.PositionalEncoding):
    """A positional encoding's rotation without its score bias."""

    def __init__(self, inner: tfs.PositionalEncoding) -> None:
        super().__init__()
        self.inner = inner

    def rotate(self, x: Tensor, positions: Tensor) -> Tensor:
        return self.inner.rotate(x, positions)


class CachedPathDropsScoreBias(MultiHead):
    """Once its cache holds earlier positions, it stops passing the score bias on (a "fast
    decode path"): with the tiny decoder's own positions, which have no bias, nothing shows;
    with ALiBi every generated token attends without it."""

    def forward(self, residual: Tensor, *, positional: tfs.PositionalEncoding, positions: Tensor,
                cache: LayerCache | None = None) -> Tensor:  # fmt: skip
        if cache is not None and cache.length > 0:
            positional = _RotationOnly(positional)
        return super().forward(residual, positional=positional, positions=positions, cache=cache)


BROKEN += [
    ("attention", "cached_path_drops_score_bias", CachedPathDropsScoreBias, ["kv_cache", "rotary", "score_bias"], {"check_kv_cache_matches_full_forward"}),
]  # fmt: skip


class RenormsRowsInPlace(Embedding):
    """Caps each looked-up row's norm at 1 the way ``nn.Embedding(max_norm=1.0)`` does: by
    rewriting those rows of the weight in place during the forward pass (the output is the
    capped rows, but the parameter the optimizer holds changes under it)."""

    def forward(self, tokens: Tensor) -> Tensor:
        with torch.no_grad():
            torch.embedding_renorm_(self.weight, tokens, 1.0, 2.0)
        return self.weight[tokens]


BROKEN += [
    ("embedding", "renorms_rows_in_place", RenormsRowsInPlace, [], {"check_leaves_inputs_alone"}),
]  # fmt: skip


class ResidMidOnNormalised(PreNorm):
    """Fires ``hook_resid_mid`` on the MLP's normalised input instead of the stream: live
    (patching it changes the MLP's input), but it is not the residual stream."""

    def forward(self, residual: Tensor, *, positional: tfs.PositionalEncoding, positions: Tensor,
                cache: LayerCache | None = None) -> Tensor:  # fmt: skip
        normed = self.norm_attention(residual)
        attended = self.attention(normed, positional=positional, positions=positions, cache=cache)
        residual = residual + self._drop(attended)
        return residual + self._drop(self.mlp(self.hook_resid_mid(self.norm_mlp(residual))))


class ResidMidBeforeAttention(PreNorm):
    """Fires ``hook_resid_mid`` on the block's input, before attention has written."""

    def forward(self, residual: Tensor, *, positional: tfs.PositionalEncoding, positions: Tensor,
                cache: LayerCache | None = None) -> Tensor:  # fmt: skip
        residual = self.hook_resid_mid(residual)
        normed = self.norm_attention(residual)
        attended = self.attention(normed, positional=positional, positions=positions, cache=cache)
        residual = residual + self._drop(attended)
        return residual + self._drop(self.mlp(self.norm_mlp(residual)))


BROKEN += [
    ("block", "resid_mid_on_normalised", ResidMidOnNormalised, ["identity_path", "resid_mid"], {"check_resid_mid_between_sublayers"}),
    ("block", "resid_mid_before_attention", ResidMidBeforeAttention, ["identity_path", "resid_mid"], {"check_resid_mid_between_sublayers"}),
]  # fmt: skip


class ScoresHookBeforeScaling(MultiHead):
    """Writes its own pattern path and fires ``hook_attn_scores`` on ``QK^T`` before the
    1/sqrt(d_head) scale and the bias: live, causal, right outputs, but the scores a user reads
    or patches are not the ones the softmax sees."""

    def _attend_with_pattern(self, *args: Tensor, **kwargs: Any) -> Tensor:
        q, k, v = args
        score_bias = kwargs["score_bias"]
        hidden = causal_mask(kwargs["query_positions"], kwargs["key_positions"])
        raw = self.hook_attn_scores((q @ k.transpose(-1, -2)).masked_fill(hidden, float("-inf")))
        scores = raw / math.sqrt(q.shape[-1])
        if score_bias is not None:
            scores = scores + score_bias
        return self.hook_pattern(torch.softmax(scores, dim=-1)) @ v


class SharesHeadsByTiling(MultiHead):
    """Shares key/value heads by tiling (``repeat``: query head h reads KV head h % n_kv)
    instead of grouping (h // group, as Llama, TransformerLens and the weight converters do):
    a different model, silently, from the same weights."""

    def _share(self, x: Tensor) -> Tensor:
        return x if self.group == 1 else x.repeat(1, self.group, 1, 1)


BROKEN += [
    ("attention", "scores_hook_before_scaling", ScoresHookBeforeScaling, ["kv_cache", "rotary", "score_bias"], {"check_pattern_is_a_distribution"}),
    ("attention", "shares_heads_by_tiling", SharesHeadsByTiling, ["kv_cache", "rotary", "score_bias"], {"check_other_sizes"}),
]  # fmt: skip


class ScaleHookOnVariance(LayerNorm):
    """Fires ``hook_scale`` on ``var + eps`` and takes the root after it: live and right, but
    the scale a user reads (to fold a norm into a linear map, say) is its square."""

    def _written_out(self, residual: Tensor) -> Tensor:
        centred = residual - residual.mean(dim=-1, keepdim=True)
        variance = self.hook_scale(centred.square().mean(dim=-1, keepdim=True) + self.eps)
        out = self.hook_normalized(centred / variance.sqrt()) * self.weight
        return out if self.bias is None else out + self.bias


class NormalizedHookAfterGain(LayerNorm):
    """Fires ``hook_normalized`` after the gain: the same numbers at initialisation, where the
    gain is one; once trained it is no longer the normalised stream."""

    def _written_out(self, residual: Tensor) -> Tensor:
        centred = residual - residual.mean(dim=-1, keepdim=True)
        scale = self.hook_scale((centred.square().mean(dim=-1, keepdim=True) + self.eps).sqrt())
        out = self.hook_normalized(centred / scale * self.weight)
        return out if self.bias is None else out + self.bias


BROKEN += [
    ("norm", "scale_hook_on_variance", ScaleHookOnVariance, _NORM_CAPABILITIES, {"check_norm_hooks_agree"}),
    ("norm", "normalized_hook_after_gain", NormalizedHookAfterGain, _NORM_CAPABILITIES, {"check_norm_hooks_agree"}),
]  # fmt: skip


class PostHookBeforeActivation(GELU):
    """Fires ``hook_post`` on the pre-activations and applies GELU after it: live and right,
    but the "neuron activations" a user reads or patches are the pre-activations."""

    def forward(self, residual: Tensor) -> Tensor:
        pre = self.hook_pre(affine(residual, self.W_in, self.b_in))
        return affine(gelu(self.hook_post(pre)), self.W_out, self.b_out)


class PreHookAfterActivation(GELU):
    """Fires ``hook_pre`` after the activation (both hooks then hold the activations)."""

    def forward(self, residual: Tensor) -> Tensor:
        post = self.hook_pre(gelu(affine(residual, self.W_in, self.b_in)))
        return affine(self.hook_post(post), self.W_out, self.b_out)


BROKEN += [
    ("mlp", "post_hook_before_activation", PostHookBeforeActivation, [], {"check_mlp_hooks_agree"}),
    ("mlp", "pre_hook_after_activation", PreHookAfterActivation, [], {"check_mlp_hooks_agree"}),
]  # fmt: skip


class _SavesFloat32Weights(torch.autograd.Function):
    """Attention with a hand-written backward that saves the softmax weights as they come:
    under autocast they are float32 (a float32 score bias promotes them) while the gradient
    arriving is bfloat16, and ``weights^T @ grad`` mixes the two."""

    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor, hidden: Tensor,
                bias: Tensor | None) -> Tensor:  # fmt: skip
        return _attention_forward(ctx, q, k, v, hidden, bias)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        return _attention_backward(ctx, grad)


class BackwardBlindToAutocast(_Kernel):
    """A kernel with a hand-written backward that is right in float32 and in bfloat16, and
    crashes ``tfs train --dtype bfloat16`` (autocast) as soon as a score bias is used."""

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, query_positions: Tensor,
                key_positions: Tensor, score_bias: Tensor | None = None) -> Tensor:  # fmt: skip
        hidden = self.hidden(query_positions, key_positions)
        out: Tensor = _SavesFloat32Weights.apply(q, k, v, hidden, score_bias)
        return out


BROKEN += [
    ("attention_kernel", "backward_blind_to_autocast", BackwardBlindToAutocast, ["exact", "kv_cache", "score_bias"], {"check_autocast"}),
]  # fmt: skip


class GateAsBuffer(GELU):
    """Keeps a learned output gate as a buffer that requires a gradient: saved, moved and
    differentiated like a parameter, but the optimizer only updates parameters."""

    gate: Tensor

    def __init__(self, dims: tfs.Dims) -> None:
        super().__init__(dims)
        self.register_buffer("gate", torch.ones(dims.d_model).requires_grad_())

    def forward(self, residual: Tensor) -> Tensor:
        return super().forward(residual) * self.gate


BROKEN += [
    ("mlp", "gate_as_buffer", GateAsBuffer, [], {"check_gradient_reaches_every_parameter"}),
]  # fmt: skip


# Each check catches at least one broken example (test_every_check_has_teeth); these are the
# ones written for checks that had none.


class NeedsAnOption(GELU):
    """Requires an option the spec never gives (a constructor argument without a default)."""

    def __init__(self, dims: tfs.Dims, width_multiplier: int) -> None:
        super().__init__(dims)


class ReturnsTheHiddenLayer(GELU):
    """Returns its hidden activations (``d_mlp`` wide) instead of projecting them back."""

    def forward(self, residual: Tensor) -> Tensor:
        return gelu(affine(residual, self.W_in, self.b_in))


class TanhThroughNumpy(GELU):
    """Takes GELU's tanh through NumPy ("it has a fast tanh"): NumPy has no bfloat16, nor
    gradients."""

    def forward(self, residual: Tensor) -> Tensor:
        pre = affine(residual, self.W_in, self.b_in)
        inner = math.sqrt(2 / math.pi) * (pre + 0.044715 * pre**3)
        tanh = torch.from_numpy(np.tanh(inner.detach().numpy())).to(pre)
        return affine(0.5 * pre * (1 + tanh), self.W_out, self.b_out)


class RandomFeaturesNotSaved(GELU):
    """Adds a fixed random projection kept in a non-persistent buffer: the checkpoint leaves it
    out, so a model loaded elsewhere (another seed) computes something else."""

    def __init__(self, dims: tfs.Dims) -> None:
        super().__init__(dims)
        self.register_buffer("features", torch.randn(dims.d_model, dims.d_model), persistent=False)

    def forward(self, residual: Tensor) -> Tensor:
        return super().forward(residual) + residual @ self.features


class ScalesByKeepInEval(PreNorm):
    """Dropout as first published: drops without rescaling while training, and scales by
    ``1 - p`` in evaluation instead. Consistent on average, but evaluation (and every sample)
    then depends on the dropout setting: the same weights give other outputs with p = 0."""

    def _drop(self, update: Tensor) -> Tensor:
        if not self.dropout:
            return update
        if not self.training:
            return update * (1 - self.dropout)
        return update * (torch.rand_like(update) >= self.dropout)


class IgnoresRotation(MultiHead):
    """Declares 'rotary' but never turns queries or keys (a positional encoding that only
    rotates then reaches nothing)."""

    def forward(self, residual: Tensor, *, positional: tfs.PositionalEncoding, positions: Tensor,
                cache: LayerCache | None = None) -> Tensor:  # fmt: skip
        class BiasOnly(tfs.PositionalEncoding):
            def score_bias(self, query_positions: Tensor, key_positions: Tensor) -> Tensor | None:
                return positional.score_bias(query_positions, key_positions)

        return super().forward(residual, positional=BiasOnly(), positions=positions, cache=cache)


class CosineForBoth(Rotary):
    """A "rotation" using the cosine for both terms: it changes each vector's length by
    position, so scores depend on where a query is, not only how far back the key is."""

    def rotate(self, x: Tensor, positions: Tensor) -> Tensor:
        turned, kept = x[..., : self.rotated], x[..., self.rotated :]
        cos = self.cos[positions].to(x.dtype)
        first, second = turned.chunk(2, dim=-1)
        rotated = turned * cos + torch.cat([-second, first], dim=-1) * cos
        return torch.cat([rotated, kept], dim=-1)


class PostNormClaimingIdentity(PostNorm):
    """A post-norm block declaring 'identity_path': it normalises the stream itself."""


class ForgetsTheMLP(PreNorm):
    """Computes its MLP but adds only the attention's output to the stream."""

    def forward(self, residual: Tensor, *, positional: tfs.PositionalEncoding, positions: Tensor,
                cache: LayerCache | None = None) -> Tensor:  # fmt: skip
        normed = self.norm_attention(residual)
        attended = self.attention(normed, positional=positional, positions=positions, cache=cache)
        residual = self.hook_resid_mid(residual + self._drop(attended))
        self.mlp(self.norm_mlp(residual))
        return residual


class LinearMLP(GELU):
    """Leaves out the activation: two linear maps make one, and nothing non-linear is learned."""

    def forward(self, residual: Tensor) -> Tensor:
        pre = self.hook_pre(affine(residual, self.W_in, self.b_in))
        return affine(self.hook_post(pre), self.W_out, self.b_out)


class BiasOnlyUnembedding(nn.Module):
    """Logits from a learned bias alone: the residual stream never reaches them."""

    def __init__(self, dims: tfs.Dims, embedding: nn.Module) -> None:
        super().__init__()
        self.weight = nn.Parameter(0.02 * torch.randn(dims.d_model, dims.d_vocab))
        self.bias = nn.Parameter(torch.zeros(dims.d_vocab))

    def forward(self, residual: Tensor) -> Tensor:
        return (residual @ self.weight) * 0 + self.bias


class UniformAttention(_Kernel):
    """Weights every visible key equally (the scores computed, then dropped): a causal running
    mean, which cannot pick out one flagged position."""

    def weights(self, scores: Tensor) -> Tensor:
        return torch.softmax(scores * 0, dim=-1)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, query_positions: Tensor,
                key_positions: Tensor, score_bias: Tensor | None = None) -> Tensor:  # fmt: skip
        scores = self.scores(q, k).masked_fill(
            self.hidden(query_positions, key_positions), float("-inf")
        )
        return self.weights(scores) @ v


class UniformAttentionModule(MultiHead):
    """An attention module with the uniform kernel built in."""

    def __init__(self, dims: tfs.Dims, kernel: nn.Module) -> None:
        super().__init__(dims, UniformAttention(dims))


class UnscaledInBFloat16(_Kernel):
    """A "fast path" for bfloat16 inputs that leaves out the 1/sqrt(d_head) scale."""

    def scores(self, q: Tensor, k: Tensor) -> Tensor:
        if q.dtype == torch.bfloat16:
            return q @ k.transpose(-1, -2)
        return super().scores(q, k)


BROKEN += [
    ("mlp", "needs_an_option", NeedsAnOption, [], {"check_builds"}),
    ("mlp", "returns_the_hidden_layer", ReturnsTheHiddenLayer, [], {"check_output_contract"}),
    ("mlp", "tanh_through_numpy", TanhThroughNumpy, [], {"check_bfloat16"}),
    ("mlp", "random_features_not_saved", RandomFeaturesNotSaved, [], {"check_safetensors_round_trip", "check_decoder_checkpoint_round_trip"}),
    ("block", "scales_by_keep_in_eval", ScalesByKeepInEval, ["identity_path", "resid_mid"], {"check_dropout_off_in_eval"}),
    ("attention", "ignores_rotation", IgnoresRotation, ["kv_cache", "rotary", "score_bias"], {"check_rotation_changes_output"}),
    ("positional", "cosine_for_both", CosineForBoth, ["rotary"], {"check_rotary_is_relative"}),
    ("block", "post_norm_claiming_identity", PostNormClaimingIdentity, ["identity_path", "resid_mid"], {"check_block_identity_path"}),
    ("block", "forgets_the_mlp", ForgetsTheMLP, ["identity_path", "resid_mid"], {"check_block_uses_both_sublayers"}),
    ("mlp", "linear_mlp", LinearMLP, [], {"check_learns_nonlinear"}),
    ("unembedding", "bias_only_unembedding", BiasOnlyUnembedding, [], {"check_learns_bigrams", "check_decoder_trains"}),
    ("attention", "uniform_attention", UniformAttentionModule, ["kv_cache", "score_bias"], {"check_learns_flagged_copy"}),
    ("attention_kernel", "unscaled_in_bfloat16", UnscaledInBFloat16, ["exact", "kv_cache"], {"check_matches_reference_bfloat16"}),
]  # fmt: skip
