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
SUBLAYER_SCALE = 1e-3  # a block's sublayer outputs, made small (see _scaled_sublayers)


def _with_dropout(subject: Subject, moved: bool = True) -> Decoder:
    """The subject's decoder with dropout ``P`` (its parameters moved off their initial values
    unless ``moved`` is false), or NotApplicable if it refuses dropout."""
    try:
        return subject.moved_decoder(dropout=P) if moved else subject.decoder(dropout=P)
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
    with torch.no_grad(), _scaled_sublayers(subject, decoder, SUBLAYER_SCALE):
        expected = probe(subject, decoder.eval()).run(one)[0]
        _train_alone(subject, decoder)
        drawn = p.run(many).clone()  # (a part reusing its output buffer is another check's)
        again = p.run(many)
    _drops_something(drawn, expected)
    _require_fresh_draws(drawn, again)
    _require_expectation(drawn, expected)
    if subject.kind == "attention_kernel":
        _require_rate(decoder, p, one)
    else:
        _require_skip_path_kept(subject, one)


def _train_alone(subject: Subject, decoder: Decoder) -> None:
    """Training mode for the module under test, evaluation mode for its kernels (whose weight
    dropout would hide whether a block drops anything itself)."""
    decoder.train()
    if subject.kind != "attention_kernel":
        for entry, module in decoder.parts:
            if entry.kind == "attention_kernel":
                module.eval()


@contextlib.contextmanager
def _scaled_sublayers(subject: Subject, decoder: Decoder, scale: float) -> Iterator[None]:
    """A block's attention and MLP outputs multiplied by ``scale`` while it lasts.

    A block's expected output equals its evaluation output only to first order: a norm or MLP
    that reads a dropped sublayer output is not linear. With small sublayer outputs the
    second-order part is SUBLAYER_SCALE times smaller than dropout's own spread, so forgetting
    the 1 / (1 - p) still shows clearly and a correct block is not blamed for curvature."""
    sublayers = [
        m for e, m in decoder.parts if subject.kind == "block" and e.kind in ("attention", "mlp")
    ]

    def scaled(module: nn.Module, args: object, output: Tensor) -> Tensor:
        return output * scale

    handles = [module.register_forward_hook(scaled) for module in sublayers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _require_skip_path_kept(subject: Subject, one: dict[str, Tensor]) -> None:
    """With its attention and MLP silenced (outputs zero), a block passes its input on through
    the skip path alone, and dropout has nothing to drop: every draw is the evaluation output.

    GPT-2 drops what each sublayer adds to the residual stream, never the stream itself. A
    block that drops ``x + f(x)`` instead of ``f(x)`` is still unbiased, but it cuts the
    identity path the embedding's information travels by. (At initialisation, so that a norm
    applied to a silenced sublayer's output gives zero, as its bias still is.)"""
    decoder = _with_dropout(subject, moved=False)
    p = probe(subject, decoder)
    many = {k: v.expand(SAMPLES, *v.shape[1:]).clone() for k, v in one.items()}
    with torch.no_grad(), _scaled_sublayers(subject, decoder, 0.0):
        expected = probe(subject, decoder.eval()).run(one)[0]
        _train_alone(subject, decoder)
        drawn = p.run(many)
    spread = (drawn - expected).abs().max().item()
    if not spread <= 1e-6 * (1.0 + expected.abs().max().item()):
        raise CheckFailed(
            f"with its attention and MLP silenced (outputs zero), its output while training with "
            f"dropout {P} still moves by up to {spread:.3g} from draw to draw: dropout reaches "
            "the residual stream itself. Drop only what each sublayer adds (x + dropout(f(x)), "
            "not dropout(x + f(x)))"
        )


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
    """Values that are zero but for feature 0 at key 0 and feature 1 at key 1: a query's
    feature j is zero exactly when its weight on key j was dropped. That happens with
    probability ``p``, for each head, query and key apart (queries a window hides a key from are
    left out)."""
    values = torch.zeros_like(one["values"])
    values[..., 0, 0] = values[..., 1, 1] = 1.0
    given = {**one, "values": values}
    many = {k: v.expand(SAMPLES, *v.shape[1:]).clone() for k, v in given.items()}
    with torch.no_grad():
        decoder.eval()
        sees = (p.run(given)[0, ..., :2] != 0).flatten()  # [head, query, key j] flattened
        decoder.train()
        dropped = (p.run(many)[..., :2] == 0).flatten(1)[:, sees].double()
    rate = dropped.mean().item()
    if abs(rate - P) > 0.03:
        raise CheckFailed(
            f"with dropout {P}, {rate:.3f} of the attention weights were dropped (measured over "
            f"{SAMPLES} runs): the spec's dropout is the probability of dropping a weight, not "
            "of keeping it"
        )
    _require_independent(dropped)


def _require_independent(dropped: Tensor) -> None:
    """Whether one weight is dropped tells nothing about another: the correlation of any two
    weights' drops (another head, query or key) is within 0.2 of zero (its standard error over
    SAMPLES draws is 0.018)."""
    centred = dropped - dropped.mean(0)
    covariance = centred.T @ centred
    scale = covariance.diagonal().sqrt().clamp_min(1e-12)
    correlation = covariance / scale[:, None] / scale[None, :]
    correlation.fill_diagonal_(0.0)
    if float(correlation.abs().max()) > 0.2:
        raise CheckFailed(
            f"with dropout {P}, the drops of two attention weights (of other heads, queries or "
            f"keys) go together: correlation {float(correlation.abs().max()):.2f} over {SAMPLES} "
            "runs. Is one mask shared by every head (or query, or key)? Draw the mask with the "
            "weights' full shape, one draw per weight"
        )
