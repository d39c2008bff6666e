"""Checks of dropout (Srivastava et al. 2014) where a spec asks for it.

GPT-2 drops the attention weights (the kernel's job) and each sublayer's output (the block's);
a spec's ``dropout`` is the probability of zeroing each. Inverted dropout scales what it keeps by
``1 / (1 - p)``, so the expected output while training is the output in evaluation, where
nothing is dropped. Every check with dropout 0 cannot see any of this.
"""

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from transformer_from_scratch.conformance.checks_common import BATCH, LENGTH
from transformer_from_scratch.conformance.probes import Probe, probe
from transformer_from_scratch.conformance.results import CheckFailed, NotApplicable
from transformer_from_scratch.conformance.subject import Subject
from transformer_from_scratch.core.decoder import Decoder
from transformer_from_scratch.core.errors import SpecError

P = 0.25  # not 0.5, where dropping with probability 1 - p instead of p looks the same
SAMPLES = 3000  # draws of the dropout masks, as copies of one sample in one batch
SUBLAYER_SCALE = 1e-3  # a block's sublayer outputs, made small (see _small_sublayers)


def _with_dropout(subject: Subject) -> Decoder:
    """The subject's moved decoder with dropout ``P``, or NotApplicable if it refuses it."""
    try:
        return subject.moved_decoder(dropout=P)
    except SpecError as exc:
        raise NotApplicable(f"it refuses dropout at build time: {exc.problems[-1]}") from exc


def check_dropout_off_in_eval(subject: Subject) -> None:
    """With dropout in the spec, evaluation mode computes exactly what it computes without."""
    dropped = _with_dropout(subject).eval()
    plain = subject.moved_decoder().eval()
    dropped.load_state_dict(plain.state_dict())
    p, q = probe(subject, dropped), probe(subject, plain)
    inputs = p.inputs(BATCH, LENGTH)
    diff = (p.run(inputs) - q.run(inputs)).abs().max().item()
    if not diff <= 1e-6:
        raise CheckFailed(
            f"in evaluation mode, a spec with dropout {P} gives outputs {diff:.3g} away from the "
            "same weights without dropout: dropout (and anything else the dropout setting "
            "changes) must act only while training (check self.training)"
        )


def check_dropout_while_training(subject: Subject) -> None:
    """While training with dropout ``p``, the dropout it applies zeroes each weight (for a
    kernel) with probability ``p`` and keeps the expected output at the evaluation output."""
    if subject.kind not in ("attention_kernel", "block"):
        raise NotApplicable("GPT-2's dropout sits in kernels (weights) and blocks (outputs)")
    decoder = _with_dropout(subject)
    p = probe(subject, decoder)
    one = {k: v[:1] for k, v in p.inputs(BATCH, LENGTH).items()}
    many = {k: v.expand(SAMPLES, *v.shape[1:]).clone() for k, v in one.items()}
    with torch.no_grad(), _small_sublayers(subject, decoder):
        expected = probe(subject, decoder.eval()).run(one)[0]
        _train_alone(subject, decoder)
        drawn, again = p.run(many), p.run(many)
    _drops_something(drawn, expected)
    _require_fresh_draws(drawn, again)
    _require_expectation(drawn, expected)
    if subject.kind == "attention_kernel":
        _require_rate(decoder, p, one)


def _train_alone(subject: Subject, decoder: Decoder) -> None:
    """Training mode for the module under test, evaluation mode for its kernels (whose weight
    dropout would hide whether a block drops anything itself)."""
    decoder.train()
    if subject.kind != "attention_kernel":
        for entry, module in decoder.parts:
            if entry.kind == "attention_kernel":
                module.eval()


@contextlib.contextmanager
def _small_sublayers(subject: Subject, decoder: Decoder) -> Iterator[None]:
    """A block's attention and MLP outputs scaled by SUBLAYER_SCALE while it lasts.

    A block's expected output equals its evaluation output only to first order: a norm or MLP
    that reads a dropped sublayer output is not linear. With small sublayer outputs the
    second-order part is SUBLAYER_SCALE times smaller than dropout's own spread, so forgetting
    the 1 / (1 - p) still shows clearly and a correct block is not blamed for curvature."""
    sublayers = [
        m for e, m in decoder.parts if subject.kind == "block" and e.kind in ("attention", "mlp")
    ]
    handles = [module.register_forward_hook(_scaled) for module in sublayers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _scaled(module: nn.Module, args: object, output: Tensor) -> Tensor:
    return output * SUBLAYER_SCALE


def _drops_something(drawn: Tensor, expected: Tensor) -> None:
    """The draws differ from one another beyond rounding (a batch of copies may round
    differently from one sample, so equality with the evaluation output proves nothing).

    A part with no dropout of its own is not at fault (many kernels have none; the block's
    dropout still acts), so it is told, not failed."""
    spread = (drawn - drawn[:1]).abs().max().item()
    if not spread > 1e-5 * (1.0 + expected.abs().max().item()):
        raise NotApplicable(
            f"while training with dropout {P} it drops nothing itself (the spec's dropout acts "
            "only elsewhere); if it should drop, apply it (functional.dropout), and if it "
            "cannot, refuse dropout > 0 in validate()"
        )


def _require_fresh_draws(drawn: Tensor, again: Tensor) -> None:
    if torch.equal(drawn, again):
        raise CheckFailed(
            f"while training with dropout {P}, two runs on one batch dropped exactly the same "
            "entries: is the generator reseeded (torch.manual_seed) or a mask kept between "
            "calls? Every step must draw a new mask"
        )


def _require_expectation(drawn: Tensor, expected: Tensor) -> None:
    """The mean of the draws is the evaluation output, within six standard errors."""
    drawn, expected = drawn.double(), expected.double()
    mean, error = drawn.mean(0), drawn.std(0) / SAMPLES**0.5
    off = (mean - expected).abs()
    bad = off - (6 * error + 1e-6 * (1.0 + expected.abs().max()))
    if bool((bad > 0).any()):
        where = tuple(int(i) for i in (bad == bad.max()).nonzero()[0])
        errors = (off[where] / error[where]).item() if error[where] > 0 else float("inf")
        raise CheckFailed(
            f"while training with dropout {P}, the mean of {SAMPLES} runs is not the evaluation "
            f"output: at index {where} it is {mean[where].item():.6g} against "
            f"{expected[where].item():.6g}, {errors:.0f} standard errors away. Inverted "
            "dropout scales what it keeps by 1 / (1 - p), so that nothing changes on average"
        )


def _require_rate(decoder: Decoder, p: Probe, one: dict[str, Tensor]) -> None:
    """With values that are zero but at the first key, a query's output is zero exactly when
    its weight on that key was dropped: that happens with probability ``p`` (queries a window
    hides the first key from are left out)."""
    values = torch.zeros_like(one["values"])
    values[..., 0, :] = 1.0
    given = {**one, "values": values}
    many = {k: v.expand(SAMPLES, *v.shape[1:]).clone() for k, v in given.items()}
    with torch.no_grad():
        decoder.eval()
        sees_first = (p.run(given) != 0).any(-1)[0]
        decoder.train()
        zero = (p.run(many) == 0).all(-1)
    rate = zero[:, sees_first].double().mean().item()
    if abs(rate - P) > 0.03:
        raise CheckFailed(
            f"with dropout {P}, {rate:.3f} of the attention weights were dropped (measured over "
            f"{SAMPLES} runs): the spec's dropout is the probability of dropping a weight, not "
            "of keeping it"
        )
