"""The decoder: embed -> blocks -> final norm -> unembed, around the residual stream.

This module assembles parts it is handed; it never chooses an implementation (that is the
builder's job) and knows none by name.
"""

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from transformer_from_scratch.core.activations import ActivationCache
from transformer_from_scratch.core.cache import KVCache
from transformer_from_scratch.core.errors import TfsError, did_you_mean
from transformer_from_scratch.core.functional import dropout
from transformer_from_scratch.core.hooks import HookFn, HookPoint, attach, find, hook_name
from transformer_from_scratch.core.kinds import PositionalEncoding
from transformer_from_scratch.core.registry import Entry
from transformer_from_scratch.core.shapes import (
    KeptLogits,
    Logits,
    Positions,
    Residual,
    TokenIds,
)
from transformer_from_scratch.core.spec import DecoderSpec


class Decoder(nn.Module):
    """A decoder-only transformer: token ids ``[batch pos]`` -> logits ``[batch pos d_vocab]``.

    The residual stream (Elhage et al. 2021) starts as the token embedding plus any additive
    position vectors; each block reads it and adds its sublayers' outputs back; a final norm
    (if the spec has one) and the unembedding turn it into next-token logits.
    """

    def __init__(
        self,
        spec: DecoderSpec,
        *,
        embedding: nn.Module,
        positional: PositionalEncoding,
        blocks: Sequence[nn.Module],
        final_norm: nn.Module,
        unembedding: nn.Module,
        parts: Sequence[tuple[Entry, nn.Module]],
    ) -> None:
        super().__init__()
        self.spec = spec
        self.embedding = embedding
        self.positional = positional
        self.blocks = nn.ModuleList(blocks)
        self.final_norm = final_norm
        self.unembedding = unembedding
        # Which registered implementation made each part (for reports and checkpoints); a
        # plain list, so the modules are not registered twice.
        self.parts: list[tuple[Entry, nn.Module]] = list(parts)
        self.hook_embed = HookPoint()
        self.hook_pos_embed = HookPoint()
        self.around = attach(list(self.blocks), _sublayers(self.parts), unembedding)
        self._hook_points: dict[str, HookPoint] | None = None
        self._hook_gaps: dict[str, str] = {}

    def forward(
        self, tokens: TokenIds, cache: KVCache | None = None, *, last_only: bool = False
    ) -> KeptLogits:
        """Next-token logits at every position; with ``cache``, continue where it left off.

        ``last_only``: logits at the last position only (``[batch 1 d_vocab]``), which is all
        that generating needs: the final norm and the unembedding then run on one position,
        not on the whole prompt (GPT-2 small's unembedding is 77 GFLOP for a 1,000-token
        prompt, against 0.08 for one position); hooks from the final norm on see that one.
        """
        self.check_tokens(tokens)
        offset = cache.length if cache is not None else 0
        positions = self.positions(tokens.shape[1], offset, tokens.device)
        residual = self.residual_at_start(tokens, positions)
        for index, block in enumerate(self.blocks):
            layer_cache = cache.layers[index] if cache is not None else None
            residual = self.around.resid_pre[index](residual)
            residual = block(
                residual, positional=self.positional, positions=positions, cache=layer_cache
            )
            residual = self.around.resid_post[index](residual)
        if last_only:
            residual = residual[:, -1:]
        final = self.around.unembed_in(self.final_norm(residual))
        logits: torch.Tensor = self.around.unembed_out(self.unembedding(final))
        return logits

    def check_tokens(self, tokens: TokenIds) -> None:
        """Refuse token ids outside ``0 .. d_vocab - 1``, naming the first and where it is.

        Skipped where reading the answer would stall the device: training on a GPU (the data
        pipeline's ids come from the same tokenizer) and inside ``torch.compile``.
        """
        if tokens.numel() == 0 or tokens.is_meta or torch.compiler.is_compiling():
            return
        if self.training and tokens.device.type != "cpu":
            return
        outside = (tokens < 0) | (tokens >= self.spec.d_vocab)
        if bool(outside.any()):
            where = tuple(int(i) for i in outside.nonzero()[0])
            raise TfsError(
                f"token id {int(tokens[where])} at (sample, position) {where} is outside the "
                f"vocabulary: this model's ids run 0..{self.spec.d_vocab - 1} (d_vocab = "
                f"{self.spec.d_vocab}); was the text encoded with another tokenizer?"
            )

    def residual_at_start(self, tokens: TokenIds, positions: Positions) -> Residual:
        """The residual stream before the first block: token embedding (+ position vectors),
        with the spec's dropout while training."""
        residual: torch.Tensor = self.hook_embed(self.embedding(tokens))
        added = self.positional.embed(positions)
        if added is not None:
            added = added.to(residual.dtype).expand_as(residual)
            if self.hook_pos_embed.fns:  # a tensor of the hook's own, which it may write into
                added = added.clone(memory_format=torch.contiguous_format)
            residual = residual + self.hook_pos_embed(added)
        return dropout(residual, self.spec.dropout, self.training)

    def positions(self, length: int, offset: int, device: torch.device) -> Positions:
        """Positions ``offset .. offset+length-1``, refused past the context window."""
        if offset + length > self.spec.n_ctx:
            raise TfsError(
                f"the input reaches position {offset + length - 1}, but the model's context "
                f"window (n_ctx) holds positions 0..{self.spec.n_ctx - 1}; shorten the input "
                "(keep its last n_ctx tokens) or build a spec with a larger n_ctx"
            )
        return torch.arange(offset, offset + length, device=device)

    @property
    def can_cache(self) -> bool:
        """Whether every attention part declares ``kv_cache`` (else decoding recomputes)."""
        kinds = ("attention", "attention_kernel")
        return all("kv_cache" in e.capabilities for e, _ in self.parts if e.kind in kinds)

    def new_cache(self) -> KVCache:
        """An empty key-value cache for incremental decoding."""
        return KVCache(len(self.blocks))

    def parameter_counts(self) -> dict[str, int]:
        """Trainable numbers per kind; a shared (tied) tensor counts once, for its first owner."""
        owner: dict[int, str] = {}
        for entry, module in reversed(self.parts):
            for param in module.parameters():
                owner[id(param)] = entry.kind
        counts: Counter[str] = Counter()
        for param in self.parameters():
            counts[owner.get(id(param), "decoder")] += param.numel()
        return dict(counts)

    # --- looking inside: hook points (names as TransformerLens) ---------------------------
    def hook_points(self) -> dict[str, HookPoint]:
        """Every hook point of this model, by name (``blocks.0.attn.hook_pattern``, ...)."""
        if self._hook_points is None:
            points = find(self)
            self._hook_gaps = _pattern_gaps(self)
            self._hook_points = {n: p for n, p in points.items() if n not in self._hook_gaps}
        return self._hook_points

    def resolve_hooks(self, names: "HookNames") -> list[str]:
        """The hook names a name, list of names or filter ``fn(name) -> bool`` stands for.

        An unknown name is an error with the nearest names; one this model has not got for a
        reason (a parallel block has no ``hook_resid_mid``) says so.
        """
        points = self.hook_points()
        if callable(names):
            return [name for name in points if names(name)]
        wanted = [names] if isinstance(names, str) else list(names)
        for name in wanted:
            if name in self._hook_gaps:
                raise TfsError(f"no hook point named {name!r}: {self._hook_gaps[name]}")
            if name not in points:
                raise TfsError(_unknown_hook(name, sorted(points)))
        return wanted

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple["HookNames", HookFn]]) -> Iterator["Decoder"]:
        """Attach ``(name or filter, fn)`` pairs for the ``with`` block; removed afterwards,
        also on an exception. ``fn(activation, hook)`` may return a replacement."""
        points = self.hook_points()
        added: list[tuple[HookPoint, HookFn]] = []
        try:
            for names, fn in fwd_hooks:
                for name in self.resolve_hooks(names):
                    points[name].add(fn)
                    added.append((points[name], fn))
            yield self
        finally:
            for point, fn in reversed(added):
                point.remove(fn)

    def run_with_hooks(
        self,
        tokens: TokenIds,
        fwd_hooks: Sequence[tuple["HookNames", HookFn]] = (),
        cache: KVCache | None = None,
    ) -> Logits:
        """Logits with ``fwd_hooks`` attached for this one call."""
        with self.hooks(fwd_hooks):
            logits: Logits = self(tokens, cache=cache)
        return logits

    def run_with_cache(
        self,
        tokens: TokenIds,
        names_filter: "HookNames | None" = None,
        cache: KVCache | None = None,
    ) -> tuple[Logits, ActivationCache]:
        """Logits and the activations at the hook points ``names_filter`` selects (all by
        default), detached from autograd, in an :class:`ActivationCache` (with the residual
        stream accumulated or decomposed, the logit lens, ...)."""
        store: dict[str, torch.Tensor] = {}

        def keep(activation: torch.Tensor, hook: HookPoint) -> None:
            store[hook.name] = activation.detach()

        logits = self.run_with_hooks(tokens, [(names_filter or (lambda _: True), keep)], cache)
        return logits, ActivationCache(store, self)


HookNames = str | Sequence[str] | Callable[[str], bool]


def _sublayers(
    parts: Sequence[tuple[Entry, nn.Module]],
) -> list[tuple[nn.Module, nn.Module | None]]:
    """Each block's attention and MLP (``None`` for an attention-only block), from the order the
    builder made the parts in."""
    pairs: list[tuple[nn.Module, nn.Module | None]] = []
    latest: dict[str, Any] = {}
    for entry, module in parts:
        if entry.kind == "block":
            pairs.append((latest.pop("attention"), latest.pop("mlp", None)))
        latest[entry.kind] = module
    return pairs


def _pattern_gaps(decoder: Decoder) -> dict[str, str]:
    """Pattern and score hooks of attention whose kernel is approximate: it has no softmax
    pattern, and the written-out one would not be what the model computes."""
    paths = {id(module): hook_name(path) for path, module in decoder.named_modules()}
    approximate = {id(m): e for e, m in decoder.parts
                   if e.kind == "attention_kernel" and "exact" not in e.capabilities}  # fmt: skip
    gaps = {}
    for entry, module in decoder.parts:
        kernels = [approximate[id(c)] for c in module.children() if id(c) in approximate]
        if entry.kind != "attention" or not kernels:
            continue
        reason = (f"its attention_kernel {kernels[0].name!r} is approximate (not `exact`), so "
                  "there is no softmax pattern to show; hook_z shows what it mixed")  # fmt: skip
        for leaf in ("hook_attn_scores", "hook_pattern"):
            gaps[f"{paths[id(module)]}.{leaf}"] = reason
    return gaps


def _unknown_hook(name: str, known: list[str]) -> str:
    endings = sorted({n.split(".")[-1] for n in known})
    leaf = name.split(".")[-1]
    why = ""
    if leaf.startswith("hook_") and leaf not in endings:
        why = f" (no part of this model has a {leaf})"
    return (
        f"no hook point named {name!r}{why}{did_you_mean(name, known)} (this model's hook "
        f"points end in: {', '.join(endings)}; decoder.hook_points() lists them all)"
    )
