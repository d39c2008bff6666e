"""The kinds of component, and the contract each kind's implementations keep.

A *kind* is a slot in the decoder (``attention``, ``mlp``, ...). An *implementation* is a named
factory registered for a kind. Every factory is called as ``factory(dims, **injected, **options)``:
``dims`` is a :class:`~transformer_from_scratch.core.dims.Dims`, ``injected`` are the parts the
builder hands over (listed per kind below), and ``options`` come from the spec.

The decoder reads the residual stream (*A Mathematical Framework for Transformer Circuits*,
Elhage et al. 2021): every block reads from it and adds its output back to it::

    tokens -> embedding (+ positional.embed) -> block x n_layers -> final norm -> unembedding
"""

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import attrs
from torch import nn

from transformer_from_scratch.core.cache import LayerCache
from transformer_from_scratch.core.errors import TfsError, unknown_name_message
from transformer_from_scratch.core.shapes import (
    HeadVectors,
    KeyPositions,
    Keys,
    Logits,
    Mixed,
    Positions,
    PositionVectors,
    Queries,
    QueryPositions,
    Residual,
    ScoreBias,
    TokenIds,
    Values,
)


@attrs.frozen
class KindInfo:
    """What the registry knows about a kind: its contract, injected parts and capabilities."""

    name: str
    contract: str
    injected: tuple[str, ...] = ()
    capabilities: Mapping[str, str] = attrs.field(factory=dict)


KINDS: dict[str, KindInfo] = {
    info.name: info
    for info in [
        KindInfo(
            "embedding",
            "tokens [batch pos] -> residual [batch pos d_model]; exposes `weight` "
            "[d_vocab d_model] so a tied unembedding can share it",
        ),
        KindInfo(
            "positional",
            "a PositionalEncoding: embed(positions) added to the residual, rotate(q or k, "
            "positions), score_bias(query_positions, key_positions); each may be neutral",
            capabilities={
                "additive": "embed() returns vectors added to the residual stream",
                "rotary": "rotate() turns queries and keys by their position",
                "score_bias": "score_bias() returns a bias added to attention scores",
            },
        ),
        KindInfo(
            "attention_kernel",
            "(queries, keys, values, *, query_positions, key_positions, score_bias) -> mixed "
            "values [batch head query_pos d_head]; causal: a query never sees a later key",
            capabilities={
                "exact": "equals softmax(QK^T/sqrt(d_head) + mask)V to floating-point tolerance",
                "kv_cache": "takes fewer queries than keys (the keys of a KV cache)",
                "score_bias": "adds a positional score bias (ALiBi) before the softmax",
                "sliding_window": "honours a `window` option (each query sees the last w keys)",
            },
        ),
        KindInfo(
            "attention",
            "(residual, *, positional, positions, cache) -> residual [batch pos d_model]",
            injected=("kernel",),
            capabilities={
                "kv_cache": "extends a LayerCache so decoding one token costs one position",
                "rotary": "applies positional.rotate to queries and keys",
                "score_bias": "passes positional.score_bias to its kernel",
            },
        ),
        KindInfo("mlp", "residual [batch pos d_model] -> residual [batch pos d_model]"),
        KindInfo(
            "norm",
            "residual [batch pos d_model] -> residual [batch pos d_model]",
            capabilities={
                "zero_mean": "at initialisation, each output vector has mean 0",
                "unit_rms": "at initialisation, each output vector has root mean square 1",
                "scale_invariant": "scaling an input vector does not change its output",
                "shift_invariant": "adding a constant to an input vector does not change its "
                "output",
            },
        ),
        KindInfo(
            "block",
            "(residual, *, positional, positions, cache) -> residual; reads the stream and adds "
            "its sublayers' outputs back",
            injected=("attention", "mlp", "make_norm"),
            capabilities={
                "identity_path": "with sublayers that output zero, the block returns its input",
            },
        ),
        KindInfo(
            "unembedding",
            "residual [batch pos d_model] -> logits [batch pos d_vocab]",
            injected=("embedding",),
            capabilities={"tied": "shares the embedding's weight tensor (not a copy)"},
        ),
    ]
}


class PositionalEncoding(nn.Module):
    """The contract of kind ``positional``, with neutral defaults to override.

    Position can enter attention in three places; an implementation overrides the ones it uses
    and declares the matching capabilities (``additive``, ``rotary``, ``score_bias``). Every
    method takes explicit positions, which is what keeps KV-cache decoding exact.
    """

    def embed(self, positions: Positions) -> PositionVectors | None:
        """Vectors added to the residual stream at the start, or ``None``."""
        return None

    def rotate(self, x: HeadVectors, positions: Positions) -> HeadVectors:
        """Queries or keys turned by their position (identity by default)."""
        return x

    def score_bias(
        self, query_positions: QueryPositions, key_positions: KeyPositions
    ) -> ScoreBias | None:
        """A bias added to the attention scores before the softmax, or ``None``."""
        return None


@runtime_checkable
class TokenEmbedding(Protocol):
    """Kind ``embedding``."""

    weight: nn.Parameter

    def __call__(self, tokens: TokenIds) -> Residual: ...


@runtime_checkable
class AttentionKernel(Protocol):
    """Kind ``attention_kernel``: mixes values by causal attention weights."""

    def __call__(
        self,
        queries: Queries,
        keys: Keys,
        values: Values,
        *,
        query_positions: QueryPositions,
        key_positions: KeyPositions,
        score_bias: ScoreBias | None = None,
    ) -> Mixed: ...


@runtime_checkable
class Sublayer(Protocol):
    """Kinds ``attention`` and ``block``: read the residual stream with positions and a cache."""

    def __call__(
        self,
        residual: Residual,
        *,
        positional: PositionalEncoding,
        positions: Positions,
        cache: LayerCache | None = None,
    ) -> Residual: ...


@runtime_checkable
class ResidualMap(Protocol):
    """Kinds ``mlp`` and ``norm``: residual in, residual out."""

    def __call__(self, residual: Residual) -> Residual: ...


@runtime_checkable
class Unembedding(Protocol):
    """Kind ``unembedding``: the residual stream read out as logits over the vocabulary."""

    def __call__(self, residual: Residual) -> Logits: ...


def kind_info(kind: str) -> KindInfo:
    """The :class:`KindInfo` for ``kind``, or an error listing the kinds."""
    try:
        return KINDS[kind]
    except KeyError:
        raise TfsError(unknown_name_message("kind", kind, sorted(KINDS))) from None


__all__ = [
    "KINDS",
    "AttentionKernel",
    "KindInfo",
    "PositionalEncoding",
    "ResidualMap",
    "Sublayer",
    "TokenEmbedding",
    "Unembedding",
    "kind_info",
]
