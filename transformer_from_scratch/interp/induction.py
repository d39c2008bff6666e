"""Induction heads: the attention heads that complete ``[A][B] ... [A] -> [B]``.

On a sequence of random tokens repeated twice, an induction head at a position in the second
half attends to the token *after* the same token's previous occurrence, one half back (Elhage et
al. 2021; Olsson et al. 2022, "In-context Learning and Induction Heads"). Its score is the mean
attention weight on exactly that key; a previous-token head's is the weight on the key just
before the query.
"""

import torch
from torch import Tensor

from transformer_from_scratch.core.decoder import Decoder


def repeated_tokens(batch: int, half: int, d_vocab: int, generator: torch.Generator) -> Tensor:
    """``[batch 2*half]``: ``half`` random tokens, then the same tokens again."""
    first = torch.randint(0, d_vocab, (batch, half), generator=generator)
    return torch.cat([first, first], dim=1)


@torch.no_grad()
def induction_scores(decoder: Decoder, tokens: Tensor) -> Tensor:
    """``[layer head]``: mean attention from each second-half position to the key one half back
    plus one, on repeated ``tokens`` (as :func:`repeated_tokens` makes)."""
    half = tokens.shape[1] // 2
    queries = torch.arange(half, 2 * half)
    return _scores(decoder, tokens, queries, queries - half + 1)


@torch.no_grad()
def previous_token_scores(decoder: Decoder, tokens: Tensor) -> Tensor:
    """``[layer head]``: mean attention from each position to the one just before it."""
    queries = torch.arange(1, tokens.shape[1])
    return _scores(decoder, tokens, queries, queries - 1)


def _scores(decoder: Decoder, tokens: Tensor, queries: Tensor, keys: Tensor) -> Tensor:
    names = [f"blocks.{i}.attn.hook_pattern" for i in range(len(decoder.blocks))]
    _, cache = decoder.run_with_cache(tokens, names_filter=names)
    return torch.stack([cache[name][:, :, queries, keys].mean(dim=(0, 2)) for name in names])
