"""Checks of attention kernels against the textbook formula: values, gradients, the KV cache.

Lengths run well past any tile or chunk a kernel may use internally (four of the largest default
CPU tile, plus ragged ends), with one head and one sample so they stay cheap.
"""

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from transformer_from_scratch.conformance.compare import first_difference, require_finite
from transformer_from_scratch.conformance.probes import probe
from transformer_from_scratch.conformance.results import CheckFailed, NotApplicable
from transformer_from_scratch.conformance.subject import Subject

# The built-in flash kernel's CPU tile is 128; lengths past four tiles, with ragged ends.
LARGEST_CPU_TILE = 128
SHORT_LENGTHS = (1, 2, 5, 7, 13, 17, 24)
LONG_LENGTHS = (LARGEST_CPU_TILE + 1, 2 * LARGEST_CPU_TILE + 3, 4 * LARGEST_CPU_TILE + 5)
NAMES = ("queries", "keys", "values")


def kernel_under_test(subject: Subject, n_ctx: int = max(LONG_LENGTHS)) -> nn.Module:
    """The kernel, built inside a decoder whose context holds ``n_ctx`` positions."""
    if subject.kind != "attention_kernel":
        raise NotApplicable("only kernels are compared with the formula")
    return probe(subject, subject.decoder(n_ctx=n_ctx).eval()).owner


def _exact_kernel(subject: Subject) -> nn.Module:
    if subject.kind == "attention_kernel" and not subject.has("exact"):
        raise NotApplicable("it declares itself approximate (no 'exact' capability)")
    return kernel_under_test(subject)


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


def _case(
    subject: Subject, length: int, seed: int, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Random q, k, v (and a score bias if declared), as wide as the subject's heads: as many
    heads as it has and two samples when short, one of each when long."""
    generator = torch.Generator().manual_seed(seed)
    batch, heads = (2, subject.sizes["n_heads"]) if length <= max(SHORT_LENGTHS) else (1, 1)
    width = subject.sizes["d_head"]
    q, k, v = (torch.randn(batch, heads, length, width, generator=generator) for _ in range(3))
    bias = torch.randn(heads, length, length, generator=generator).to(dtype)
    return q.to(dtype), k.to(dtype), v.to(dtype), bias if subject.has("score_bias") else None


def _compare(subject: Subject, kernel: nn.Module, dtype: torch.dtype, lengths: tuple[int, ...],
             atol: float, rtol: float) -> None:  # fmt: skip
    window = subject.options.get("window")
    for length, layout in [(n, layout) for n in lengths for layout in _LAYOUTS]:
        q, k, v, bias = _case(subject, length, seed=length, dtype=dtype)
        q, k, v = (_LAYOUTS[layout](x) for x in (q, k, v))
        pos = torch.arange(length)
        out = kernel(q, k, v, query_positions=pos, key_positions=pos, score_bias=bias)
        expected = reference_attention(q, k, v, pos, pos, bias, window)
        if out.shape != expected.shape or out.dtype != dtype:
            raise CheckFailed(
                f"at length {length} in {dtype} it returned {tuple(out.shape)} {out.dtype}; "
                f"expected {tuple(expected.shape)} {dtype}"
            )
        if not torch.allclose(out.double(), expected.double(), atol=atol, rtol=rtol):
            diff = (out.double() - expected.double()).abs()
            query = int(diff.amax(dim=(0, 1, 3)).argmax())
            why = (
                "check the score scale, the mask, the softmax axis and, past one tile, the "
                "rescaling of running sums"
                if layout == "contiguous"
                else _INPUT_STRIDES
            )
            raise CheckFailed(
                f"at length {length} ({dtype}), with inputs {_LAYOUT_WORDS[layout]}, query "
                f"position {query} differs from softmax(QK^T/sqrt(d_head) + bias + mask)V by "
                f"{diff.max().item():.3g}; {why}"
            )


# Queries, keys and values as given in tests (contiguous) and as a decoder gives them: multi-head
# attention splits the heads with a transpose, so they arrive as views with the head and position
# strides swapped (same values, not contiguous).
_LAYOUTS: dict[str, Callable[[Tensor], Tensor]] = {
    "contiguous": lambda x: x,
    "as a decoder sends them": lambda x: x.transpose(1, 2).contiguous().transpose(1, 2),
}
_LAYOUT_WORDS = {
    "contiguous": "contiguous",
    "as a decoder sends them": "laid out as a decoder sends them (transposed views)",
}
_INPUT_STRIDES = (
    "it is right for contiguous inputs: does it read them by fixed strides (a pointer, .view, "
    "as_strided)? Call .contiguous() first"
)


def check_matches_reference(subject: Subject) -> None:
    """An exact kernel equals the textbook formula in float32, at lengths past several tiles."""
    kernel = _exact_kernel(subject)
    _compare(subject, kernel, torch.float32, _lengths(subject, SHORT_LENGTHS + LONG_LENGTHS),
             atol=1e-5, rtol=1e-4)  # fmt: skip


def _lengths(subject: Subject, lengths: tuple[int, ...]) -> tuple[int, ...]:
    """``lengths``, but only the short ones at other sizes than the tiny ones: those check the
    widths; tiles and running sums are checked at the tiny sizes."""
    return tuple(n for n in lengths if n <= max(SHORT_LENGTHS)) if subject.is_resized else lengths


def check_matches_reference_bfloat16(subject: Subject) -> None:
    """An exact kernel given bfloat16 inputs equals the formula to bfloat16 precision."""
    kernel = _exact_kernel(subject)
    _compare(subject, kernel, torch.bfloat16, (7, LONG_LENGTHS[0]), atol=3e-2, rtol=3e-2)


def kernel_gradients(
    kernel: Callable[..., Tensor], inputs: tuple[Tensor, Tensor, Tensor], weights: Tensor,
    pos: Tensor, bias: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """Gradients of ``sum(out * weights)`` for q, k, v, with autograd's errors put in words."""
    q, k, v = (x.detach().clone().requires_grad_() for x in inputs)
    out = kernel(q, k, v, query_positions=pos, key_positions=pos, score_bias=bias)
    if out.grad_fn is None:
        raise CheckFailed(
            "its output has no gradient at all: is it computed under torch.no_grad(), or "
            "detached from the queries, keys and values?"
        )
    grads = torch.autograd.grad((out * weights).sum(), (q, k, v), allow_unused=True)
    for name, grad in zip(NAMES, grads, strict=True):
        if grad is None:
            raise CheckFailed(f"no gradient reaches the {name}: is something detached?")
    return grads[0], grads[1], grads[2]


def check_gradient_reaches_inputs(subject: Subject) -> None:
    """Gradients reach the queries, keys and values, and are finite (every kernel, exact or not)."""
    kernel = kernel_under_test(subject, n_ctx=24)
    q, k, v, bias = _case(subject, 7, seed=3)
    weights = torch.randn(q.shape, generator=torch.Generator().manual_seed(4))
    grads = kernel_gradients(kernel, (q, k, v), weights, torch.arange(7), bias)
    # With a window of one key each query sees only its own value: q and k cannot matter.
    matter = NAMES if subject.options.get("window") != 1 else ("values",)
    for name, grad in zip(NAMES, grads, strict=True):
        if name not in matter:
            continue
        if not torch.isfinite(grad).all():
            raise CheckFailed(f"the gradient for the {name} contains NaN or infinity")
        if not bool(grad.abs().sum() > 0):
            raise CheckFailed(f"the gradient for the {name} is zero everywhere: they cannot learn")


def check_gradients_match_reference(subject: Subject) -> str | None:
    """An exact kernel's gradients for queries, keys and values equal the textbook formula's.

    The output's gradient is given both contiguous and as a decoder sends it, a transposed view
    (a backward pass that reads it by fixed strides is right for one and wrong for the other).
    """
    kernel = _exact_kernel(subject)
    window, worst = subject.options.get("window"), 0.0
    for length in _lengths(subject, (5, 13, LONG_LENGTHS[0])):
        q, k, v, bias = _case(subject, length, seed=100 + length, dtype=torch.float64)
        pos = torch.arange(length)
        for layout, weights in _upstream(q.shape, seed=length):
            mine = kernel_gradients(kernel, (q, k, v), weights, pos, bias)
            ref = kernel_gradients(
                lambda q, k, v, **kw: reference_attention(
                    q, k, v, kw["query_positions"], kw["key_positions"], kw["score_bias"], window
                ),
                (q, k, v), weights, pos, bias,
            )  # fmt: skip
            for name, a, b in zip(NAMES, mine, ref, strict=True):
                diff = (a - b).abs().max().item()
                if not torch.allclose(a, b, atol=1e-4, rtol=1e-3):
                    raise CheckFailed(
                        f"at length {length}, with the output's gradient {layout}, the "
                        f"gradient for the {name} differs from the formula's by {diff:.3g}, "
                        "beyond even float32 rounding: the backward pass is wrong"
                        + ("" if layout == "contiguous" else _STRIDES)
                    )
                worst = max(worst, diff)
    notes = [_bias_gradient(subject, kernel, window)] if subject.has("score_bias") else []
    if worst > 1e-8:
        notes.append(
            f"gradients agree to float32 precision but not float64 (off by up to {worst:.2g}): "
            "it computes in a lower precision internally"
        )
    return "; ".join(n for n in notes if n) or None


def _bias_gradient(subject: Subject, kernel: nn.Module, window: int | None) -> str | None:
    """A learned score bias (T5's relative buckets, trainable ALiBi slopes) gets the formula's
    gradient, or the kernel refuses one with an error; it is never silently held fixed."""
    q, k, v, bias = _case(subject, 13, seed=7, dtype=torch.float64)
    assert bias is not None
    q, k, v = (x.requires_grad_() for x in (q, k, v))  # as in training
    pos = torch.arange(13)
    weights = torch.randn(q.shape, generator=torch.Generator().manual_seed(8)).double()
    learned = bias.detach().clone().requires_grad_()
    try:
        out = kernel(q, k, v, query_positions=pos, key_positions=pos, score_bias=learned)
    except Exception as exc:  # refusing a bias that requires grad is honest
        return f"it refuses a score bias that requires grad ({type(exc).__name__}: {exc})"
    [mine] = torch.autograd.grad((out * weights).sum(), learned, allow_unused=True)
    ref_bias = bias.detach().clone().requires_grad_()
    ref = reference_attention(q, k, v, pos, pos, ref_bias, window)
    [expected] = torch.autograd.grad((ref * weights).sum(), ref_bias)
    if (mine is None or not bool(mine.abs().sum() > 0)) and bool(expected.abs().sum() > 0):
        raise CheckFailed(
            "no gradient reaches a score bias that requires grad: a learned bias (T5's relative "
            "buckets, trainable ALiBi slopes) would silently never train. Send it the gradient "
            "of the scores, or raise an error when score_bias.requires_grad"
        )
    mine = torch.zeros_like(expected) if mine is None else mine
    if not torch.allclose(mine, expected, atol=1e-4, rtol=1e-3):
        raise CheckFailed(
            f"the gradient for the score bias differs from the formula's by "
            f"{(mine - expected).abs().max().item():.3g}: it is the scores' gradient, masked "
            "like the scores, summed over the batch"
        )
    return None


def _upstream(shape: torch.Size, seed: int) -> list[tuple[str, Tensor]]:
    """The output's gradient, contiguous and as a decoder sends it: multi-head attention joins
    the heads with ``mixed.transpose(1, 2)``, so the gradient arrives as a transposed view."""
    weights = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).double()
    as_sent = weights.transpose(1, 2).contiguous().transpose(1, 2)  # same values, not contiguous
    forms = [("contiguous", weights)]
    if not as_sent.is_contiguous():  # (one head and one sample: every layout is contiguous)
        forms.append(("laid out as a decoder sends it (not contiguous)", as_sent))
    return forms


_STRIDES = (
    " for a gradient that is not contiguous, though right for a contiguous one: does the "
    "backward pass read it as if it were (.view, or pointers with fixed strides)? Call "
    ".contiguous() on it first"
)


def kernel_cache_matches_full_forward(subject: Subject) -> None:
    """One query at a time, and in chunks, against a cache of keys: the full pass's outputs."""
    kernel, length = kernel_under_test(subject, n_ctx=24), 9
    q, k, v, bias = _case(subject, length, seed=5)
    pos = torch.arange(length)
    full = require_finite(kernel(q, k, v, query_positions=pos, key_positions=pos, score_bias=bias))
    steps = [(t, t + 1) for t in range(length)]
    for label, chunks in (("one query at a time", steps), ("in chunks", [(0, 3), (3, 4), (4, 9)])):
        pieces = []
        for start, stop in chunks:
            part = None if bias is None else bias[:, start:stop, :stop]
            pieces.append(kernel(q[:, :, start:stop], k[:, :, :stop], v[:, :, :stop],
                                 query_positions=pos[start:stop], key_positions=pos[:stop],
                                 score_bias=part))  # fmt: skip
        compare_cached(torch.cat(pieces, dim=2), full, pos_dim=2, how=label)


def compare_cached(cached: Tensor, full: Tensor, pos_dim: int, how: str) -> None:
    """Fail at the first position where decoding with a cache left the full pass."""
    if cached.shape != full.shape:
        raise CheckFailed(
            f"decoding {how} returned shape {tuple(cached.shape)}, the full pass "
            f"{tuple(full.shape)}"
        )
    first = first_difference(cached, full, pos_dim, atol=1e-5)
    if first is not None:
        raise CheckFailed(
            f"decoding {how} with a cache, position {first} differs from the full pass by "
            f"{(cached - full).abs().max().item():.3g}: is there a separate path for few "
            "queries, an old key dropped, or a position offset wrong?"
        )
