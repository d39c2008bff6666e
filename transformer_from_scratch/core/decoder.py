"""The decoder: embed -> blocks -> final norm -> unembed, around the residual stream.

This module assembles parts it is handed; it never chooses an implementation (that is the
builder's job) and knows none by name.
"""

from collections import Counter
from collections.abc import Sequence

import torch
from torch import nn

from transformer_from_scratch.core.cache import KVCache
from transformer_from_scratch.core.errors import TfsError
from transformer_from_scratch.core.kinds import PositionalEncoding
from transformer_from_scratch.core.registry import Entry
from transformer_from_scratch.core.shapes import Logits, Positions, Residual, TokenIds
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

    def forward(self, tokens: TokenIds, cache: KVCache | None = None) -> Logits:
        """Next-token logits at every position; with ``cache``, continue where it left off."""
        self.check_tokens(tokens)
        offset = cache.length if cache is not None else 0
        positions = self.positions(tokens.shape[1], offset, tokens.device)
        residual = self.residual_at_start(tokens, positions)
        for index, block in enumerate(self.blocks):
            layer_cache = cache.layers[index] if cache is not None else None
            residual = block(
                residual, positional=self.positional, positions=positions, cache=layer_cache
            )
        logits: torch.Tensor = self.unembedding(self.final_norm(residual))
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
        """The residual stream before the first block: token embedding (+ position vectors)."""
        residual: torch.Tensor = self.embedding(tokens)
        added = self.positional.embed(positions)
        return residual if added is None else residual + added.to(residual.dtype)

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
