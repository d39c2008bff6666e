"""Decoding incrementally equals one full pass, whatever the kind under test.

Generation feeds a decoder one token at a time through its KV cache; training feeds whole
sequences. Both must give the same logits at every position, and appending tokens must never
change the logits at earlier ones. Checked on a whole decoder, so positional encodings, blocks
and MLPs are held to it as well as attention and kernels.
"""

import torch
from torch import Tensor

from transformer_from_scratch.conformance.compare import first_difference, require_finite
from transformer_from_scratch.conformance.results import CheckFailed, NotApplicable
from transformer_from_scratch.conformance.subject import Subject
from transformer_from_scratch.core.decoder import Decoder

LENGTH = 11
SCHEDULES = {
    "one token at a time": [1] * LENGTH,
    "a prompt of 4, then one at a time": [4] + [1] * (LENGTH - 4),
    "in chunks of 3, 1, 5 and 2": [3, 1, 5, 2],
}
ATOL = 1e-4


def _decoder_and_tokens(subject: Subject) -> tuple[Decoder, Tensor, Tensor]:
    decoder = subject.moved_decoder().eval()  # (a bias left out of the cached path shows)
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, decoder.spec.d_vocab, (2, LENGTH), generator=generator)
    with torch.no_grad():
        full = require_finite(decoder(tokens), "the decoder's logits")
    return decoder, tokens, full


def _decode(decoder: Decoder, tokens: Tensor, chunks: list[int]) -> Tensor:
    cache, pieces, start = decoder.new_cache(), [], 0
    with torch.no_grad():
        for size in chunks:
            pieces.append(decoder(tokens[:, start : start + size], cache=cache))
            start += size
    if cache.length != start:
        raise CheckFailed(
            f"after {start} tokens the KV cache holds {cache.length} positions: does every "
            "block hand `cache` on to its attention, and does attention extend it?"
        )
    return torch.cat(pieces, dim=1)


def check_decoder_kv_cache(subject: Subject) -> None:
    """A decoder holding it gives the same logits decoding through its cache as in one pass."""
    decoder, tokens, full = _decoder_and_tokens(subject)
    if not decoder.can_cache:
        raise NotApplicable("an attention part does not declare 'kv_cache'; decoding recomputes")
    for how, chunks in SCHEDULES.items():
        cached = _decode(decoder, tokens, chunks)
        first = first_difference(cached, full, pos_dim=1, atol=ATOL)
        if first is not None:
            diff = (cached - full).abs().max().item()
            raise CheckFailed(
                f"decoding {how} through the KV cache, the logits at position {first} differ "
                f"from one full pass by {diff:.3g}: does some part depend on how many tokens it "
                "is given at once (a sequence length, a separate single-token path), or lose "
                "the position offset?"
            )


def check_decoder_prefix_stable(subject: Subject) -> None:
    """Appending tokens never changes a decoder's logits at earlier positions."""
    decoder, tokens, full = _decoder_and_tokens(subject)
    for length in (1, 2, 5, LENGTH - 1):
        with torch.no_grad():
            shorter = decoder(tokens[:, :length])
        first = first_difference(shorter, full[:, :length], pos_dim=1, atol=ATOL)
        if first is not None:
            raise CheckFailed(
                f"the logits at position {first} differ when the input is {length} tokens long "
                f"instead of {LENGTH}: something depends on the sequence's length (a position "
                "counted from the end, or a normalisation over positions?)"
            )
