"""Counting floating-point operations, and measuring what the device can actually do.

Conventions (as FlashAttention and PaLM count them):

- A matrix product ``[m k] @ [k n]`` is ``2 m k n`` FLOPs.
- Causal attention forward: ``Q K^T`` and ``P V`` each cost ``2 N^2 d`` per head, and causality
  halves both: ``2 B H N^2 d`` in all. The backward pass is 2.5 times the forward (five
  products instead of two), so forward + backward is ``3.5x`` the forward.
- A decoder's training FLOPs per token (PaLM, Chowdhery et al. 2022, appendix B):
  ``6 N + 12 L H Q T``: ``6 N`` for the forward and backward products with the ``N`` weights
  that multiply activations (the embedding table counts only if it is also the unembedding),
  and ``12 L H Q T`` for attention scores and mixing over ``T`` positions (``L`` layers, ``H``
  heads of width ``Q``); causal masking is *not* subtracted, matching how MFU is usually quoted.
"""

import time

import torch

from transformer_from_scratch.core.decoder import Decoder


def attention_flops(batch: int, heads: int, length: int, d_head: int, backward: bool) -> float:
    """FLOPs of causal attention (forward, or forward + backward)."""
    forward = 2.0 * batch * heads * length * length * d_head
    return forward * (3.5 if backward else 1.0)


def matmul_parameters(decoder: Decoder) -> int:
    """Parameters that multiply activations: all, minus lookup tables not reused as matrices."""
    unembedding = {id(p) for p in decoder.unembedding.parameters()}
    lookup_only = [
        p
        for p in [*decoder.embedding.parameters(), *decoder.positional.parameters()]
        if id(p) not in unembedding
    ]
    skip = {id(p) for p in lookup_only}
    return sum(p.numel() for p in decoder.parameters() if id(p) not in skip)


def training_flops_per_token(decoder: Decoder, context: int) -> float:
    """``6 N + 12 L H Q T`` (see the module docstring)."""
    spec = decoder.spec
    attention = 12.0 * spec.n_layers * spec.n_heads * spec.d_head * context
    return 6.0 * matmul_parameters(decoder) + attention


def peak_flops(device: torch.device, dtype: torch.dtype, size: int | None = None) -> float:
    """FLOP/s of a large square matrix product measured here, now (never a datasheet figure)."""
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    repeats = 10 if device.type == "cuda" else 3
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2.0 * size**3 * repeats / (time.perf_counter() - start)


def sync(device: torch.device) -> None:
    """Wait for queued device work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
