"""Checks of positional encodings: position reaches the model, and the declared properties hold."""

import functools

import torch

from transformer_from_scratch.conformance.results import CheckFailed, NotApplicable
from transformer_from_scratch.conformance.subject import Subject
from transformer_from_scratch.conformance.tasks import copy_back_accuracy
from transformer_from_scratch.core.plugins import load_registry

WAYS_IN = ("additive", "rotary", "score_bias")


# Two layers of four heads: enough for every way position can enter (ALiBi needs depth to
# single out one offset), small enough to train in a second or two.
COPY_MODEL = {"n_layers": 2, "n_heads": 4, "d_head": 8, "d_model": 32}
MARGIN = 0.25
# Rounds of training (400 steps each), each scored against the control after as many: an
# encoding that starts far from its trained scale (N(0, 1) rows, as nn.Embedding draws) is slower.
STAGES = 2


@functools.cache
def _control_scores(seed: int) -> tuple[float, ...]:
    """The same task with no positional encoding at all, after each stage of training
    (built-ins only; cached per seed)."""
    registry = load_registry(autoload=False)
    control = Subject(registry.get("positional", "none"), registry, seed=seed)
    decoder = control.decoder(**COPY_MODEL)
    return tuple(
        copy_back_accuracy(decoder, decoder.spec.d_vocab, seed=seed) for _ in range(STAGES)
    )


def check_position_reaches_model(subject: Subject) -> None:
    """A decoder using it learns "output the token two back" far better than one without it
    (after as much training: one round, or a second if the first was not enough)."""
    if not any(subject.has(c) for c in WAYS_IN):
        raise NotApplicable(
            "it declares no way for position to enter (additive, rotary or score_bias)"
        )
    decoder = subject.decoder(**COPY_MODEL)
    controls = _control_scores(subject.seed)
    for control in controls:
        score = copy_back_accuracy(decoder, decoder.spec.d_vocab, seed=subject.seed)
        if score >= control + MARGIN:
            return
    raise CheckFailed(
        f"a decoder using it reaches {score:.0%} on 'copy the token two back' after "
        f"{len(controls)} rounds of training, against {control:.0%} with no positional encoding "
        f"at all (needs {MARGIN:.0%} more): position information is not reaching attention"
    )


def check_distinct_positions(subject: Subject) -> None:
    """An additive encoding gives every position a different vector."""
    if not subject.has("additive"):
        raise NotApplicable("it adds nothing to the residual stream (no 'additive' capability)")
    decoder = subject.decoder()
    n_ctx = decoder.spec.n_ctx
    vectors = decoder.positional.embed(torch.arange(n_ctx))
    if vectors is None:
        raise CheckFailed("it declares 'additive' but embed() returned None")
    distance = torch.cdist(vectors.double(), vectors.double()) + torch.eye(
        n_ctx, dtype=torch.float64
    )
    i, j = divmod(int(distance.argmin()), n_ctx)
    if distance[i, j] < 1e-6:
        raise CheckFailed(
            f"positions {i} and {j} get the same vector: the model cannot tell them apart"
        )


def check_rotary_is_relative(subject: Subject) -> None:
    """With rotation, a query-key score depends only on the offset between their positions."""
    if not subject.has("rotary"):
        raise NotApplicable("it does not rotate queries and keys (no 'rotary' capability)")
    positional = subject.decoder().positional
    generator = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, 1, 1, subject.spec().d_head, generator=generator) for _ in range(2))

    def score(qp: int, kp: int) -> float:
        rq = positional.rotate(q, torch.tensor([qp]))
        rk = positional.rotate(k, torch.tensor([kp]))
        return float((rq * rk).sum())

    for qp, kp, shift in [(3, 1, 5), (7, 7, 2), (10, 2, 9)]:
        a, b = score(qp, kp), score(qp + shift, kp + shift)
        if abs(a - b) > 1e-4 * max(1.0, abs(a)):
            raise CheckFailed(
                f"score(q at {qp}, k at {kp}) = {a:.5g} but shifted by {shift} it is {b:.5g}: the "
                "score depends on absolute position"
            )
