"""Checks of attention modules and kernels: causality, the reference formula, the KV cache."""

import math
from typing import Any

import torch
from torch import Tensor

from transformer_from_scratch.conformance.checks_common import BATCH, _probe
from transformer_from_scratch.conformance.compare import first_difference, require_finite
from transformer_from_scratch.conformance.results import CheckFailed, NotApplicable
from transformer_from_scratch.conformance.subject import Subject
from transformer_from_scratch.conformance.tasks import flagged_copy_accuracy
from transformer_from_scratch.core.cache import LayerCache

LENGTH = 7


def check_causal_by_perturbation(subject: Subject) -> None:
    """Changing the input at position j never changes an output before j."""
    p = _probe(subject)
    inputs, noise = p.inputs(BATCH, LENGTH), p.inputs(BATCH, LENGTH, seed=1)
    before = p.run(inputs)
    for j in range(1, LENGTH):
        changed = {name: x.clone() for name, x in inputs.items()}
        for name, x in changed.items():
            dim = p.input_pos_dims[name]
            x.select(dim, j).copy_(noise[name].select(dim, j))
        after = p.run(changed)
        earlier = before.narrow(p.output_pos_dim, 0, j), after.narrow(p.output_pos_dim, 0, j)
        seen = first_difference(*earlier, p.output_pos_dim)
        if seen is not None:
            raise CheckFailed(
                f"position {seen} can see position {j}: changing the input at {j} changed the "
                f"output at {seen}"
            )


def check_causal_by_gradient(subject: Subject) -> None:
    """The output at position i has zero gradient with respect to every later input."""
    p = _probe(subject)
    inputs = {
        k: v.requires_grad_() for k, v in p.inputs(BATCH, LENGTH).items() if v.is_floating_point()
    }
    if not inputs:
        raise NotApplicable(
            "its inputs are token ids, which have no gradient (perturbation covers it)"
        )
    out = p.run(inputs)
    for i in range(LENGTH - 1):
        grads = torch.autograd.grad(
            out.select(p.output_pos_dim, i).sum(),
            list(inputs.values()),
            retain_graph=True,
            allow_unused=True,
        )
        for name, g in zip(inputs, grads, strict=True):
            if g is None:
                continue
            later = g.narrow(p.input_pos_dims[name], i + 1, LENGTH - i - 1).abs()
            if later.max() > 0:
                j = (
                    i
                    + 1
                    + int(
                        later.amax(
                            dim=[d for d in range(g.dim()) if d != p.input_pos_dims[name]]
                        ).nonzero()[0]
                    )
                )
                raise CheckFailed(
                    f"the output at position {i} has a gradient from {name} at position {j}: it "
                    "sees the future"
                )


def reference_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_pos: Tensor,
    k_pos: Tensor,
    bias: Tensor | None = None,
    window: int | None = None,
) -> Tensor:
    """The textbook formula, independent of every kernel: softmax(QK^T/sqrt(d) + bias + mask) V."""
    scores = torch.einsum("bhqd,bhkd->bhqk", q.double(), k.double()) / math.sqrt(q.shape[-1])
    if bias is not None:
        scores = scores + bias.double()
    allowed = k_pos[None, :] <= q_pos[:, None]
    if window is not None:
        allowed = allowed & (q_pos[:, None] - k_pos[None, :] < window)
    weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    return (weights @ v.double()).to(q.dtype)


def _exact_kernel(subject: Subject) -> Any:
    """The kernel under test, if it is a kernel that promises the exact formula."""
    if subject.kind != "attention_kernel":
        raise NotApplicable("only kernels are compared with the formula")
    if not subject.has("exact"):
        raise NotApplicable("it declares itself approximate (no 'exact' capability)")
    return _probe(subject).owner


def check_matches_reference(subject: Subject) -> None:
    """An exact kernel equals the textbook formula within float32 tolerance, at many lengths."""
    kernel = _exact_kernel(subject)
    window = subject.options.get("window")
    n_ctx = subject.spec().n_ctx
    generator = torch.Generator().manual_seed(0)
    for length in sorted({1, 2, 5, 7, 13, 17, n_ctx}):
        q, k, v = (torch.randn(2, 2, length, 8, generator=generator) for _ in range(3))
        pos = torch.arange(length)
        bias = (
            torch.randn(2, length, length, generator=generator)
            if subject.has("score_bias")
            else None
        )
        out = kernel(q, k, v, query_positions=pos, key_positions=pos, score_bias=bias)
        expected = reference_attention(q, k, v, pos, pos, bias, window)
        if not torch.allclose(out, expected, atol=1e-5, rtol=1e-4):
            diff = (out - expected).abs()
            query = int(diff.amax(dim=(0, 1, 3)).argmax())
            raise CheckFailed(
                f"at length {length}, query position {query} differs from "
                f"softmax(QK^T/sqrt(d_head) + mask)V by {diff.max().item():.3g}; "
                "check the score scale, the mask and the softmax axis"
            )


def check_gradients_match_reference(subject: Subject) -> None:
    """An exact kernel's gradients for queries, keys and values equal the textbook formula's."""
    kernel = _exact_kernel(subject)
    window = subject.options.get("window")
    generator = torch.Generator().manual_seed(1)
    for length in (5, 13):
        inputs = [
            torch.randn(2, 2, length, 8, generator=generator, dtype=torch.float64) for _ in range(3)
        ]
        weights = torch.randn(2, 2, length, 8, generator=generator, dtype=torch.float64)
        pos = torch.arange(length)
        grads = []
        for run in (kernel, None):
            q, k, v = (x.clone().requires_grad_() for x in inputs)
            if run is None:
                out = reference_attention(q, k, v, pos, pos, window=window)
            else:
                out = run(q, k, v, query_positions=pos, key_positions=pos)
            grads.append(torch.autograd.grad((out * weights).sum(), (q, k, v)))
        for name, mine, ref in zip(("queries", "keys", "values"), *grads, strict=True):
            if not torch.allclose(mine, ref, atol=1e-8, rtol=1e-6):
                diff = (mine - ref).abs().max().item()
                raise CheckFailed(
                    f"at length {length}, the gradient for the {name} differs from the "
                    f"formula's by {diff:.3g}: the backward pass is wrong"
                )


def check_kv_cache_matches_full_forward(subject: Subject) -> None:
    """Decoding a few positions at a time with a cache gives the full forward pass's outputs."""
    if not subject.has("kv_cache"):
        raise NotApplicable(
            "it does not declare 'kv_cache'; decoding falls back to recomputing the prefix"
        )
    if subject.kind == "attention_kernel":
        return _kernel_cache(subject)
    if subject.kind != "attention":
        raise NotApplicable("only attention modules and kernels hold a cache")
    p = _probe(subject)
    x = p.inputs(BATCH, LENGTH)["residual"]
    full = require_finite(
        p.owner(x, positional=p.decoder.positional, positions=torch.arange(LENGTH))
    )
    cache, pieces = LayerCache(), []
    for start, stop in [(0, 3), (3, 4), (4, 5), (5, LENGTH)]:
        pieces.append(
            p.owner(
                x[:, start:stop],
                positional=p.decoder.positional,
                positions=torch.arange(start, stop),
                cache=cache,
            )
        )
    _compare_cached(torch.cat(pieces, dim=1), full, pos_dim=1)


def _kernel_cache(subject: Subject) -> None:
    kernel = _probe(subject).owner
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, LENGTH, 8, generator=generator) for _ in range(3))
    pos = torch.arange(LENGTH)
    full = require_finite(kernel(q, k, v, query_positions=pos, key_positions=pos))
    tail = kernel(q[:, :, 4:], k, v, query_positions=pos[4:], key_positions=pos)
    _compare_cached(tail, full[:, :, 4:], pos_dim=2, offset=4)


def _compare_cached(cached: Tensor, full: Tensor, pos_dim: int, offset: int = 0) -> None:
    if cached.shape != full.shape:
        raise CheckFailed(
            f"cached decoding returned shape {tuple(cached.shape)}, the full pass "
            f"{tuple(full.shape)}"
        )
    first = first_difference(cached, full, pos_dim, atol=1e-5)
    if first is not None:
        pos = offset + first
        raise CheckFailed(
            f"with a cache, position {pos} differs from the full forward pass by "
            f"{(cached - full).abs().max().item():.3g}; is an old key dropped or a position "
            "offset wrong?"
        )


def check_learns_flagged_copy(subject: Subject) -> None:
    """Trained briefly, it moves 1.2x a flagged token's vector to the last position (> 90%)."""
    if subject.kind != "attention":
        raise NotApplicable("a learning check for attention modules")
    decoder = subject.decoder()
    attention = subject.module(decoder)
    score = flagged_copy_accuracy(
        attention, decoder.positional, decoder.spec.d_model, seed=subject.seed
    )
    if score < 0.9:
        raise CheckFailed(
            f"after training, only {score:.0%} of held-out cases copy the flagged vector within "
            "tolerance (needs 90%): attention is not moving information between positions"
        )
