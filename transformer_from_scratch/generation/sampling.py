"""Choosing the next token from logits: greedy, temperature, top-k and top-p (nucleus)."""

import torch
from jaxtyping import Float
from torch import Tensor


def filter_logits(
    logits: Float[Tensor, " d_vocab"], *, top_k: int | None = None, top_p: float | None = None
) -> Float[Tensor, " d_vocab"]:
    """Set to -inf every logit outside the top ``k`` and outside the nucleus of mass ``p``.

    Top-p (Holtzman et al. 2020) keeps the smallest set of most likely tokens whose
    probabilities add up to at least ``p``.
    """
    logits = logits.clone()
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[-1]
        logits[logits < kth] = float("-inf")
    if top_p is not None and top_p < 1.0:
        ordered, order = torch.sort(logits, descending=True)
        mass_before = torch.softmax(ordered, dim=-1).cumsum(-1) - torch.softmax(ordered, dim=-1)
        logits[order[mass_before >= top_p]] = float("-inf")
    return logits


def choose(
    logits: Float[Tensor, " d_vocab"],
    *,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None,
) -> int:
    """The next token id: the argmax when ``temperature`` is 0, else a seeded sample."""
    if temperature == 0:
        return int(logits.argmax())
    filtered = filter_logits(logits.float() / temperature, top_k=top_k, top_p=top_p)
    probs = torch.softmax(filtered, dim=-1)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))
