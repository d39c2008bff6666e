"""Autoregressive generation with a key-value cache.

With a cache each new token costs one position's work: the prompt is run once, then every step
feeds only the newest token. A decoder whose parts cannot cache (an attention or kernel without
the ``kv_cache`` capability) falls back to re-running the whole window each step, and says so.
When the sequence outgrows the context window, the oldest tokens are dropped and the window is
recomputed (absolute positions cannot be shifted inside a cache).
"""

import math
from collections.abc import Callable, Iterator, Sequence

import attrs
import torch

from transformer_from_scratch.core.cache import KVCache
from transformer_from_scratch.core.decoder import Decoder
from transformer_from_scratch.core.errors import TfsError
from transformer_from_scratch.generation.sampling import choose
from transformer_from_scratch.training.tokenizers import Tokenizer


@attrs.frozen(kw_only=True)
class GenerationConfig:
    """How to generate: length, sampling, seed, where to stop, and whether to cache."""

    max_new_tokens: int = 100
    temperature: float = attrs.field(default=1.0, converter=float)
    top_k: int | None = None
    top_p: float | None = attrs.field(default=None, converter=attrs.converters.optional(float))
    seed: int | None = None
    stop_token: int | None = None
    use_cache: bool = True

    def __attrs_post_init__(self) -> None:
        problems = []
        if self.max_new_tokens < 0:
            problems.append(f"max_new_tokens = {self.max_new_tokens} must be 0 or more")
        if not math.isfinite(self.temperature) or self.temperature < 0:
            problems.append(f"temperature = {self.temperature} must be 0 (greedy) or more")
        if self.top_k is not None and self.top_k < 1:
            problems.append(f"top_k = {self.top_k} must be at least 1")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            problems.append(f"top_p = {self.top_p} must be above 0 and at most 1")
        if problems:
            raise TfsError("; ".join(problems))


def can_cache(decoder: Decoder) -> bool:
    """Whether every attention part of ``decoder`` declares ``kv_cache``."""
    return decoder.can_cache


def generate(decoder: Decoder, prompt: Sequence[int], config: GenerationConfig) -> Iterator[int]:
    """Yield new token ids one at a time (streaming), after ``prompt``.

    The prompt must fit the context window; see :func:`fit_prompt` to cut it from the left.
    Each step runs in inference mode; only ints come out.
    """
    if not prompt:
        raise TfsError("the prompt is empty: give at least one token (for example end-of-text)")
    if len(prompt) > decoder.spec.n_ctx:
        raise TfsError(
            f"the prompt has {len(prompt)} tokens; the context window holds {decoder.spec.n_ctx}"
        )
    device = next(iter(decoder.parameters())).device
    generator = torch.Generator().manual_seed(config.seed) if config.seed is not None else None
    tokens, fed = list(prompt), 0
    cache = decoder.new_cache() if config.use_cache and can_cache(decoder) else None
    for _ in range(config.max_new_tokens):  # (no forward pass after the last token)
        if len(tokens) > decoder.spec.n_ctx:  # slide the window: recompute from scratch
            tokens = tokens[-decoder.spec.n_ctx :]
            cache = decoder.new_cache() if cache is not None else None
            fed = 0
        # Inference mode: no autograd bookkeeping at all (not even the version counters and
        # view records that no_grad keeps), much of a token's cost on a small model. Entered
        # here, not as a decorator on this generator (a decorator stops covering the body
        # once anything wraps the function, as a type checker does) and not around the
        # yield (the mode would leak into the caller's code between tokens).
        with torch.inference_mode():
            logits = _logits(decoder, tokens, cache, device, fed)
            token = choose(logits, temperature=config.temperature, top_k=config.top_k,
                           top_p=config.top_p, generator=generator)  # fmt: skip
        fed = len(tokens)
        yield token
        if token == config.stop_token:
            return
        tokens.append(token)


def _logits(
    decoder: Decoder, tokens: list[int], cache: KVCache | None, device: torch.device, fed: int
) -> torch.Tensor:
    """Next-token logits after ``tokens``; with a cache, feed only what it has not seen."""
    new = tokens[fed:] if cache is not None else tokens
    batch = torch.tensor([new], dtype=torch.long, device=device)
    logits: torch.Tensor = decoder(batch, cache=cache, last_only=True)
    return logits[0, -1]


def fit_prompt(prompt: Sequence[int], n_ctx: int, room: int = 1) -> tuple[list[int], int]:
    """Keep the last tokens of ``prompt`` so ``room`` new ones fit; returns (kept, dropped)."""
    keep = max(1, n_ctx - room)
    dropped = max(0, len(prompt) - keep)
    return list(prompt[dropped:]), dropped


def generate_text(
    decoder: Decoder, tokenizer: Tokenizer, prompt: str, config: GenerationConfig
) -> Iterator[str]:
    """Yield decoded text pieces as they are generated (for streaming to a terminal)."""
    ids, _ = fit_prompt(tokenizer.encode(prompt) or [tokenizer.eot], decoder.spec.n_ctx)
    yield from decode_stream(generate(decoder, ids, config), tokenizer.decode)


def decode_stream(tokens: Iterator[int], decode: Callable[[Sequence[int]], str]) -> Iterator[str]:
    """Text pieces as tokens arrive, holding back a byte token that ends mid-character."""
    pending: list[int] = []
    for token in tokens:
        pending.append(token)
        text = decode(pending)
        if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            yield text
            pending = []
    if pending:
        yield decode(pending)
