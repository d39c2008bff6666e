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
    guide: str = ""
    # The hook points an implementation owes (HookPoint attributes it calls), with the layout
    # each shows: dimension names, ``kv_head`` meaning ``n_kv_heads``. See core/hooks.py.
    hooks: Mapping[str, str] = attrs.field(factory=dict)


KINDS: dict[str, KindInfo] = {
    info.name: info
    for info in [
        KindInfo(
            "embedding",
            "tokens [batch pos] -> residual [batch pos d_model]; exposes `weight` "
            "[d_vocab d_model] so a tied unembedding can share it",
            guide="""
Called as `embedding(tokens)`: `tokens` is an integer tensor `[batch pos]` of ids in
`0 .. d_vocab-1`. Returns the residual stream's first value, `[batch pos d_model]`, in the
parameters' dtype. Keep the table as `self.weight`, an `nn.Parameter` of shape
`[d_vocab d_model]`: a `tied` unembedding multiplies by that very tensor.
""",
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
            guide="""
Subclass `PositionalEncoding` and override the methods you use; the others stay neutral.
`positions` is a 1-D integer tensor `[pos]` of absolute positions (with a KV cache the new
tokens' positions start where the cache ends, not at 0). `embed(positions)` returns
`[pos d_model]` vectors added to the residual stream, or `None`. `rotate(x, positions)` receives
queries or keys `[batch head pos d_head]` and returns them turned, same shape.
`score_bias(query_positions, key_positions)` returns `[head query_pos key_pos]`
(`dims.n_heads` heads), added to the scores before the softmax, or `None`. Declare the capability of
each method you override. A position never exceeds `dims.n_ctx - 1`.
""",
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
                "gpu": "runs at speed only on a CUDA GPU (elsewhere correct but emulated, slow): "
                "CPU benchmarks leave it out unless it is named",
            },
            guide="""
`queries` are `[batch head query_pos d_head]`; `keys` and `values` are
`[batch head key_pos d_head]` with as many heads as the queries (grouped-query attention repeats
the shared key/value heads before the kernel). `query_positions` `[query_pos]` and
`key_positions` `[key_pos]` are 1-D integer tensors of absolute positions: without a cache they
are equal; with a KV cache the keys reach further back, so `key_pos >= query_pos`. A query at
position `i` may see a key at position `j` only if `j <= i`; with a `window` option `w`, only if
`i - w < j <= i` (a window of 1 sees only itself). `score_bias`, when given, is
`[head query_pos key_pos]`, added to the scaled scores before the mask and the softmax. Scale
the scores by `1/sqrt(d_head)`. Return
`[batch head query_pos d_head]` in the inputs' dtype; half-precision inputs may be accumulated in
float32 inside. While training, drop each attention weight with probability `dims.dropout`,
scaling the rest by `1/(1 - dims.dropout)` (`functional.dropout`); a kernel that cannot refuses
`dropout > 0` in its `validate`. Keep a window as `self.window`: when someone asks for
attention patterns, the attention computes them by the formula with that window (an exact
kernel must agree).
""",
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
            guide="""
The factory receives `kernel`, the `attention_kernel` the spec chose: call it, do not write
softmax attention yourself. `forward(residual, *, positional, positions, cache=None)`: `residual`
is `[batch pos d_model]` (already normalised by the block if the block does so), `positional` the
model's `PositionalEncoding` (call `positional.rotate` on queries and keys and pass
`positional.score_bias(query_positions, key_positions)` to the kernel, so any encoding works),
`positions` the 1-D integer positions of these tokens. `cache`, when given, is a `LayerCache`:
`keys, values = cache.extend(keys, values)` appends this call's keys and values
`[batch kv_head pos d_head]` and returns all of them; the key positions then run from
`positions[0] - earlier` where `earlier` is `cache.length` before the call. Use `dims.n_heads`,
`dims.n_kv_heads` and `dims.d_head`. Returns this sublayer's output `[batch pos d_model]` (what
is added to the stream, not the stream itself).
""",
            hooks={
                "hook_q": "batch pos head d_head",
                "hook_k": "batch pos kv_head d_head",
                "hook_v": "batch pos kv_head d_head",
                "hook_attn_scores": "batch head query_pos key_pos",
                "hook_pattern": "batch head query_pos key_pos",
                "hook_z": "batch pos head d_head",
            },
        ),
        KindInfo(
            "mlp",
            "residual [batch pos d_model] -> residual [batch pos d_model]",
            guide="""
`forward(residual)`: `[batch pos d_model]` in, `[batch pos d_model]` out, each position on its
own (no mixing across positions or samples). `dims.d_mlp` is the hidden width. Returns what is
added to the stream.
""",
            hooks={"hook_pre": "batch pos d_mlp", "hook_post": "batch pos d_mlp"},
        ),
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
            guide="""
`forward(residual)`: `[batch pos d_model]` in; normalises each position's `[d_model]` vector on
its own; same shape and dtype out. The builder calls the factory once per place a norm is
needed (each block's norms and the final norm), so each call must make fresh parameters.
""",
            hooks={"hook_scale": "batch pos 1", "hook_normalized": "batch pos d_model"},
        ),
        KindInfo(
            "block",
            "(residual, *, positional, positions, cache) -> residual; reads the stream and adds "
            "its sublayers' outputs back",
            injected=("attention", "mlp", "make_norm"),
            capabilities={
                "identity_path": "with sublayers that output zero, the block returns its input",
                "resid_mid": "has a residual stream between attention and MLP (hook_resid_mid)",
                "attention_only": "has no MLP: the builder makes none and injects mlp=None",
            },
            guide="""
The factory receives the block's `attention` and `mlp` (already built; `mlp` is `None` for a
block declaring `attention_only`) and `make_norm`, a function of no arguments returning a fresh
norm each time it is called. `forward(residual, *,
positional, positions, cache=None)` returns the residual stream after the block
`[batch pos d_model]`: call `attention(x, positional=positional, positions=positions,
cache=cache)` and `mlp(x)` and add their outputs into the stream in the layout you implement.
Hand the `cache` on to the attention unchanged. While training, drop each sublayer's output
with probability `dims.dropout` before adding it (`functional.dropout`).
""",
            hooks={"hook_resid_mid": "batch pos d_model"},
        ),
        KindInfo(
            "unembedding",
            "residual [batch pos d_model] -> logits [batch pos d_vocab]",
            injected=("embedding",),
            capabilities={"tied": "shares the embedding's weight tensor (not a copy)"},
            guide="""
The factory receives the model's `embedding` (so a tied unembedding can keep
`self.weight = embedding.weight`, the same `Parameter`). `forward(residual)` reads the final
residual stream `[batch pos d_model]` (after the final norm, if the spec has one) and returns
next-token logits `[batch pos d_vocab]`.
""",
        ),
    ]
}


# The hook points every decoder has, whatever its parts (the decoder fires them itself).
DECODER_HOOKS = {
    "hook_embed": "batch pos d_model",
    "hook_pos_embed": "batch pos d_model",
    "blocks.{i}.hook_resid_pre": "batch pos d_model",
    "blocks.{i}.hook_attn_out": "batch pos d_model",
    "blocks.{i}.hook_mlp_out": "batch pos d_model",
    "blocks.{i}.hook_resid_post": "batch pos d_model",
    "unembed.hook_in": "batch pos d_model",
    "unembed.hook_out": "batch pos d_vocab",
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


# The class or protocol whose methods each kind's implementations provide (their signatures are
# the contract the scaffold copies and the plugin guide shows).
CONTRACTS: dict[str, type] = {
    "embedding": TokenEmbedding,
    "positional": PositionalEncoding,
    "attention_kernel": AttentionKernel,
    "attention": Sublayer,
    "mlp": ResidualMap,
    "norm": ResidualMap,
    "block": Sublayer,
    "unembedding": Unembedding,
}


def kind_info(kind: str) -> KindInfo:
    """The :class:`KindInfo` for ``kind``, or an error listing the kinds."""
    try:
        return KINDS[kind]
    except KeyError:
        raise TfsError(unknown_name_message("kind", kind, sorted(KINDS))) from None


__all__ = [
    "CONTRACTS",
    "DECODER_HOOKS",
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
