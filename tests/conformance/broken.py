"""Deliberately broken implementations: each must be caught by a named conformance check.

Each one is a small, realistic mistake a learner could make, built on a correct built-in.
"""

import math

import torch
from torch import Tensor, nn

import transformer_from_scratch as tfs
from transformer_from_scratch.components.embedding import Embedding
from transformer_from_scratch.components.gelu import GELU
from transformer_from_scratch.components.layer_norm import LayerNorm
from transformer_from_scratch.components.multi_head import MultiHead
from transformer_from_scratch.core.cache import LayerCache
from transformer_from_scratch.core.functional import causal_mask


class _Kernel(nn.Module):
    """Base for broken kernels: the textbook steps, each overridable."""

    def __init__(self, dims: tfs.Dims) -> None:
        super().__init__()

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
        return self.weights(scores) @ v


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
        if all_keys.shape[-2] > 4:  # "keep the cache small": silently drops the oldest entry
            self.keys, self.values = all_keys[..., 1:, :], all_values[..., 1:, :]
        assert self.keys is not None and self.values is not None
        return self.keys, self.values


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
    ("norm", "norm_over_positions", NormOverPositions, ["zero_mean", "unit_rms", "scale_invariant", "shift_invariant"], {"check_normalises", "check_decoder_causal"}),
    ("mlp", "dead_parameter", DeadParameter, [], {"check_gradient_reaches_every_parameter"}),
    ("mlp", "always_float32", AlwaysFloat32, [], {"check_float64"}),
    ("mlp", "dropout_in_eval", DropoutInEval, [], {"check_eval_deterministic"}),
    ("unembedding", "tied_by_copy", TiedByCopy, ["tied"], {"check_tied_shares_tensor"}),
]  # fmt: skip
