"""Checks that a part computes the same thing however it is called: in training or evaluation
mode, with gradients tracked or not, and without touching what it was given."""

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from transformer_from_scratch.conformance import checks_robust as rob
from transformer_from_scratch.conformance.checks_common import BATCH, LENGTH, _moved_probe
from transformer_from_scratch.conformance.probes import Inputs, Probe
from transformer_from_scratch.conformance.results import CheckFailed, NotApplicable
from transformer_from_scratch.conformance.subject import Subject

# How a part is called: training (gradients on), evaluation (no_grad) and generation (inference
# mode). A part may take a faster path in each; each must leave the inputs as they were.
GRAD_MODES: tuple[tuple[str, Callable[[], contextlib.AbstractContextManager[object]]], ...] = (
    ("with gradients on", contextlib.nullcontext),
    ("under torch.no_grad()", torch.no_grad),
    ("in inference mode", torch.inference_mode),
)


def _calls(subject: Subject, p: Probe) -> Iterator[tuple[Inputs, Callable[[], Tensor]]]:
    """Inputs and a call on them: the kind's usual call and, for a kernel that takes a score
    bias, a call with one (and with its positions as inputs too)."""
    inputs = p.inputs(BATCH, LENGTH)
    yield inputs, lambda: p.call(inputs)
    if subject.kind == "attention_kernel" and subject.has("score_bias"):
        given = p.inputs(BATCH, LENGTH, seed=1)
        heads = given["queries"].shape[1]
        generator = torch.Generator().manual_seed(2)
        bias = torch.randn(heads, LENGTH, LENGTH, generator=generator)
        given["score_bias"] = bias.to(given["queries"])
        given["query_positions"] = torch.arange(LENGTH)
        given["key_positions"] = torch.arange(LENGTH)
        yield given, lambda: p.owner(given["queries"], given["keys"], given["values"],
                                     query_positions=given["query_positions"],
                                     key_positions=given["key_positions"],
                                     score_bias=given["score_bias"])  # fmt: skip


def check_leaves_inputs_alone(subject: Subject) -> None:
    """It never changes its inputs in place, with gradients tracked or not, nor its own
    parameters and buffers (training or evaluating).

    Its caller still needs them: the residual stream's skip path reads what a norm or an MLP
    was given, a parallel block hands one normalised input to both sublayers, a KV cache keeps
    the keys and values, and a score bias may be shared by every layer. With gradients on,
    autograd refuses many in-place changes; with them off (generation, evaluation) nothing does.
    Its weights are the optimizer's to change: a forward pass that clamps or renormalises them
    in place changes the model behind the optimizer's back, and a checkpoint no longer holds
    what was trained (Moved parameters are used, so a clamp of values inside its bounds at
    initialisation shows too.)
    """
    p = _moved_probe(subject)
    state = {name: x.clone() for name, x in p.decoder.state_dict().items()}
    for label, mode in GRAD_MODES:
        for inputs, call in _calls(subject, p):
            kept = {name: x.clone() for name, x in inputs.items()}
            with mode():
                call()
            for name, before in kept.items():
                if not torch.equal(inputs[name], before):
                    diff = (inputs[name].double() - before.double()).abs().max().item()
                    raise CheckFailed(
                        f"{label}, it changed its input {name} in place (by up to {diff:.3g}): "
                        "its caller still reads that tensor afterwards (a skip connection, a "
                        "KV cache, another sublayer or layer); write results to new tensors "
                        "(x = x - m, not x -= m or x.sub_(m))"
                    )
    p.decoder.train()
    for _, call in _calls(subject, p):
        call()
    _require_state_unchanged(p, state)
    _require_state_kept_at_scale(subject)


def _require_state_kept_at_scale(subject: Subject) -> None:
    """The same at a trained model's sizes (weights 10x, inputs as large as trained ones), where
    a cap on the weights (``nn.Embedding(max_norm=...)`` rewrites the rows it looks up) bites."""
    p, inputs = rob.scaled(subject, torch.float32)
    state = {name: x.clone() for name, x in p.decoder.state_dict().items()}
    with torch.no_grad():
        p.call(inputs)
    p.decoder.train()
    p.call(inputs)
    _require_state_unchanged(p, state)


def _require_state_unchanged(p: Probe, state: dict[str, Tensor]) -> None:
    for name, value in p.decoder.state_dict().items():
        if not torch.equal(value, state[name]):
            diff = (value.double() - state[name].double()).abs().max().item()
            raise CheckFailed(
                f"a forward pass changed the model's {name} in place (by up to {diff:.3g}): "
                "forward must only read weights and buffers. A constraint on the weights "
                "(a clamp, a norm) belongs in the forward computation (w = w.clamp(...)) or in "
                "the training loop after the optimizer's step"
            )


def _tracked(inputs: Inputs) -> Inputs:
    """The inputs as training gives them: floating-point ones tracked by autograd (a kernel
    has no parameters, so only tracked inputs send it down its training path)."""
    return {k: v.detach().clone().requires_grad_() if v.is_floating_point() else v
            for k, v in inputs.items()}  # fmt: skip


def _differ(a: Tensor, b: Tensor) -> float | None:
    """How far ``a`` is from ``b``, if beyond rounding (relative to ``b``'s size)."""
    diff = (a.detach().double() - b.detach().double()).abs().max().item()
    return diff if not diff <= 1e-5 * (1.0 + b.abs().max().item()) else None


def check_train_eval_agree(subject: Subject) -> None:
    """With dropout 0, training mode and evaluation mode give the same outputs.

    Dropout is the only thing that may tell the modes apart: a part that uses batch statistics
    while training, or scales its output or leaves out a bias in one mode only, trains one
    function and evaluates, samples and is checked as another. Its parameters are first moved
    off their initial values (a zero bias left out changes nothing)."""
    p = _moved_probe(subject)
    if p.decoder.spec.dims.dropout:
        raise NotApplicable(f"dropout is {p.decoder.spec.dims.dropout}: the modes differ by design")
    inputs = p.inputs(BATCH, LENGTH)
    with torch.no_grad():
        evaluated = p.run(inputs)
    p.decoder.train()
    diff = _differ(p.run(_tracked(inputs)), evaluated)
    if diff is not None:
        raise CheckFailed(
            f"with dropout 0, its output in training mode differs from evaluation mode's by "
            f"{diff:.3g}: apart from dropout a part must compute the same function in both "
            "(statistics over the batch, a scale or a bias in one mode only?)"
        )


def check_grad_modes_agree(subject: Subject) -> None:
    """With gradients on, under no_grad and in inference mode, its outputs are the same.

    A part may take a faster path when nothing is tracked (generation runs in inference
    mode, evaluation under no_grad), but it must compute the same function there: a fast path
    that leaves out a bias or a scale makes the model sample from something it never trained.
    Its parameters are first moved off their initial values."""
    p = _moved_probe(subject)
    inputs = p.inputs(BATCH, LENGTH)
    tracked = p.run(_tracked(inputs))
    for label, mode in GRAD_MODES[1:]:
        with mode():
            diff = _differ(p.run(inputs), tracked)
        if diff is not None:
            raise CheckFailed(
                f"{label} its output differs by {diff:.3g} from its output with gradients on: "
                "a path taken when nothing is tracked must compute the same function (is a "
                "bias, a scale or a mask left out of a fast path?)"
            )
