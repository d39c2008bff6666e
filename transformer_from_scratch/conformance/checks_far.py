"""Checks at the far end of a long context and of a large vocabulary, where sizes written into
the code, or numbers carried in bfloat16, give out.

Every other check runs at contexts of a few dozen positions and vocabularies of a dozen tokens,
where a table of GPT-2's 1024 rows, a mask buffer of 2048, angles computed in bfloat16 or token
ids compared in bfloat16 all still work. Here the context holds FAR positions (past 4096, and no
power of two), and only its last few are computed: a position encoding there, or a kernel's last
queries over every key; and the vocabulary is GPT-2's (VOCAB ids, most of which bfloat16 cannot
hold: it has 8 bits of precision, so it holds 257 as 256 and 50,255 as 50,176).
"""

from collections.abc import Callable

import torch
from torch import Tensor

from transformer_from_scratch.conformance.checks_kernel import (
    kernel_under_test,
    reference_attention,
)
from transformer_from_scratch.conformance.results import CheckFailed, NotApplicable
from transformer_from_scratch.conformance.subject import Subject
from transformer_from_scratch.core.kinds import PositionalEncoding

FAR = 5003
TAIL = torch.arange(FAR - 3, FAR)  # the last three positions
NEAR = torch.arange(3)
VOCAB = 50_257  # GPT-2's
FAR_IDS = torch.tensor([0, 257, 4097, VOCAB - 2, VOCAB - 1])  # all but 0 inexact in bfloat16


def check_far_positions(subject: Subject) -> None:
    """At the end of a long context, positions stay distinct and finite (in bfloat16 too)
    and a kernel's last queries still match the formula over every key."""
    if subject.kind not in ("attention_kernel", "positional"):
        raise NotApplicable("only position encodings and kernels read positions")
    try:
        with torch.no_grad():
            if subject.kind == "attention_kernel":
                _kernel_far(subject)
            else:
                positional = subject.decoder(n_ctx=FAR).positional
                _encoding_far(subject, positional)
                _bfloat16_far(subject)
    except (IndexError, RuntimeError) as exc:
        raise CheckFailed(
            f"built for a context of {FAR}, at its last positions ({FAR - 3}..{FAR - 1}) it "
            f"raised {type(exc).__name__}: {exc}. Is a table or mask sized by hand (1024, 2048, "
            "4096) instead of by dims.n_ctx or the positions given?"
        ) from exc


def _encoding_far(subject: Subject, positional: PositionalEncoding) -> None:
    if subject.has("additive"):
        vectors = _finite("embed", positional.embed(TAIL))
        _distinct("embed() gives", vectors)
    if subject.has("rotary"):
        x = torch.randn(
            1, 1, 1, subject.sizes["d_head"], generator=torch.Generator().manual_seed(0)
        )
        turned = positional.rotate(x.expand(1, 1, len(TAIL), -1), TAIL)
        _finite("rotate", turned)
        _distinct("rotate() turns one vector into", turned[0, 0])
        _relative_far(positional, x)
    if subject.has("score_bias"):
        bias = _finite("score_bias", positional.score_bias(TAIL, torch.arange(FAR)))
        expected = (subject.sizes["n_heads"], len(TAIL), FAR)
        if bias is None or tuple(bias.shape) != expected:
            raise CheckFailed(
                f"score_bias() at the last positions gave {_shape(bias)}; expected {expected}"
            )


def _relative_far(positional: PositionalEncoding, x: Tensor) -> None:
    """A rotation's score for an offset of 2 is the same near the start and at the far end."""

    def score(qp: Tensor, kp: Tensor) -> float:
        return float((positional.rotate(x, qp) * positional.rotate(x.flip(-1), kp)).sum())

    near, far = score(NEAR[2:], NEAR[:1]), score(TAIL[2:], TAIL[:1])
    if abs(near - far) > 5e-3 * float(x.square().sum()):
        raise CheckFailed(
            f"the score of a query and a key 2 positions apart is {near:.5g} near the start but "
            f"{far:.5g} at positions {FAR - 1} and {FAR - 3}: are the angles computed in low "
            "precision, or from a table shorter than n_ctx?"
        )


def _bfloat16_far(subject: Subject) -> None:
    """In bfloat16 the far positions are bfloat16's rounding away from float32's, not more
    (bfloat16 cannot even hold 5003: angles must be computed in float32 and then rounded)."""
    low = subject.decoder(n_ctx=FAR).positional.to(torch.bfloat16)
    high = subject.decoder(n_ctx=FAR).positional.to(torch.bfloat16).float()  # same rounded weights
    x = torch.randn(
        1, 1, len(TAIL), subject.sizes["d_head"], generator=torch.Generator().manual_seed(1)
    )
    tests: list[tuple[str, Callable[[PositionalEncoding, torch.dtype], Tensor | None]]] = []
    if subject.has("additive"):
        tests.append(("embed()", lambda p, dtype: p.embed(TAIL)))
    if subject.has("rotary"):
        tests.append(("rotate()", lambda p, dtype: p.rotate(x.to(dtype), TAIL)))
    if subject.has("score_bias"):
        tests.append(("score_bias()", lambda p, dtype: p.score_bias(TAIL, torch.arange(FAR))))
    for label, run in tests:
        ours, exact = run(low, torch.bfloat16), run(high, torch.float32)
        if ours is None or exact is None:
            continue
        off = _beyond_rounding(ours, exact)
        if off:
            raise CheckFailed(
                f"in bfloat16, {label} at positions {FAR - 3}..{FAR - 1} is off its float32 "
                f"value by {off}: compute angles and distances in float32 (bfloat16 holds 5003 "
                "as 4992) and round only the result"
            )


def _kernel_far(subject: Subject) -> None:
    """The last three queries of a long context over every key, against the formula."""
    if not subject.has("kv_cache"):
        raise NotApplicable(
            "it takes as many queries as keys (no 'kv_cache'): the far end costs the whole square"
        )
    kernel = kernel_under_test(subject, n_ctx=FAR)
    generator = torch.Generator().manual_seed(5)
    q = torch.randn(1, 1, len(TAIL), subject.sizes["d_head"], generator=generator)
    k, v = (torch.randn(1, 1, FAR, subject.sizes["d_head"], generator=generator) for _ in range(2))
    keys = torch.arange(FAR)
    bias = (
        torch.randn(1, len(TAIL), FAR, generator=generator) if subject.has("score_bias") else None
    )
    out = kernel(q, k, v, query_positions=TAIL, key_positions=keys, score_bias=bias)
    expected = reference_attention(q, k, v, TAIL, keys, bias, subject.options.get("window"))
    if tuple(out.shape) != tuple(expected.shape):
        raise CheckFailed(
            f"the last {len(TAIL)} queries of a context of {FAR} positions gave "
            f"{tuple(out.shape)}; expected {tuple(expected.shape)}"
        )
    _finite("the kernel", out)
    if not subject.has("exact"):
        return  # an approximate kernel is only held to shapes and finite values here
    diff = (out.double() - expected.double()).abs().max().item()
    if not diff <= 1e-4:
        raise CheckFailed(
            f"the last queries of a context of {FAR} positions, over every key, differ from "
            f"softmax(QK^T/sqrt(d_head) + bias + mask)V by {diff:.3g}: is a mask or a table "
            "sized by hand (1024, 2048, 4096) instead of by the positions given?"
        )


def _beyond_rounding(ours: Tensor, exact: Tensor) -> str:
    """How far a bfloat16 result is from float32's (``"0.5 (of 2)"``), if beyond 3 % of its
    size (bfloat16's rounding, with room); else an empty string."""
    error = (ours.double() - exact.double()).abs().max().item()
    size = exact.double().abs().max().item()
    return "" if error <= 0.03 * size else f"{error:.3g} (of {size:.3g})"


def _finite(label: str, value: Tensor | None) -> Tensor | None:
    if value is not None and not bool(torch.isfinite(value.float()).all()):
        raise CheckFailed(f"{label} at positions {FAR - 3}..{FAR - 1} gives non-finite values")
    return value


def _distinct(label: str, vectors: Tensor | None) -> None:
    if vectors is None:
        raise CheckFailed(f"{label} nothing at the last positions of a context of {FAR}")
    distance = torch.cdist(vectors.double(), vectors.double())
    distance += torch.eye(len(vectors), dtype=torch.float64) * distance.max().clamp(min=1.0)
    if float(distance.min()) < 1e-6:
        raise CheckFailed(
            f"{label} the same vector at two of positions {FAR - 3}..{FAR - 1}: are positions "
            "clamped to a fixed size, or read from a table shorter than n_ctx?"
        )


def _shape(value: Tensor | None) -> str:
    return "None" if value is None else str(tuple(value.shape))


def check_far_token_ids(subject: Subject) -> None:
    """With GPT-2's vocabulary of 50,257, the last token ids each have their own vector (or
    logit), in bfloat16 within its rounding of float32's."""
    if subject.kind not in ("embedding", "unembedding"):
        raise NotApplicable("only the embedding and the unembedding read or write token ids")
    low = subject.module(subject.moved_decoder(d_vocab=VOCAB).to(torch.bfloat16))
    high = subject.module(subject.moved_decoder(d_vocab=VOCAB).to(torch.bfloat16).float())
    with torch.no_grad():
        if subject.kind == "embedding":
            noun, ours, exact = "vector", low(FAR_IDS[None])[0], high(FAR_IDS[None])[0]
        else:
            generator = torch.Generator().manual_seed(3)
            residual = torch.randn(1, 2, subject.sizes["d_model"], generator=generator)
            noun = "logit"
            ours = low(residual.to(torch.bfloat16))[0, :, FAR_IDS].T
            exact = high(residual)[0, :, FAR_IDS].T
    ids = f"token ids {', '.join(str(int(i)) for i in FAR_IDS)} (of {VOCAB})"
    what = f"the {noun}s of"
    if not bool(torch.isfinite(ours.float()).all()):
        raise CheckFailed(f"in bfloat16, {what} {ids} hold non-finite values")
    off = _beyond_rounding(ours, exact)
    if off:
        raise CheckFailed(
            f"in bfloat16, {what} {ids} are off their float32 values by {off}: bfloat16 holds 257 "
            "as 256 and 50,255 as 50,176, so token ids must stay integers (index rows with them; "
            "no one-hot or comparison in the weights' dtype)"
        )
    distance = torch.cdist(ours.double(), ours.double())
    distance += torch.eye(len(FAR_IDS), dtype=torch.float64) * distance.max().clamp(min=1.0)
    if float(distance.min()) < 1e-6:
        raise CheckFailed(
            f"in bfloat16, two of {ids} get the same {noun}: are ids clamped, "
            "or rounded through a float?"
        )
