"""Checks that a part computes the same thing however it is called: in training or evaluation
mode, with gradients tracked or not, and without touching what it was given."""

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from transformer_from_scratch.conformance.checks_common import BATCH, LENGTH
from transformer_from_scratch.conformance.probes import Inputs, Probe, probe
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
    """It never changes its inputs in place, with gradients tracked or not.

    Its caller still needs them: the residual stream's skip path reads what a norm or an MLP
    was given, a parallel block hands one normalised input to both sublayers, a KV cache keeps
    the keys and values, and a score bias may be shared by every layer. With gradients on,
    autograd refuses many in-place changes; with them off (generation, evaluation) nothing does.
    """
    p = probe(subject, subject.decoder().eval())
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


def check_train_eval_agree(subject: Subject) -> None:
    """With dropout 0, training mode and evaluation mode give the same outputs.

    Dropout is the only thing that may tell the modes apart: a part that uses batch statistics
    while training, or scales its output in one mode only (inverted dropout done backwards),
    trains one function and evaluates, samples and is checked as another."""
    decoder = subject.decoder()
    if decoder.spec.dims.dropout:
        raise NotApplicable(f"dropout is {decoder.spec.dims.dropout}: the modes differ by design")
    p = probe(subject, decoder.eval())
    inputs = p.inputs(BATCH, LENGTH)
    with torch.no_grad():
        evaluated = p.run(inputs)
    decoder.train()
    trained = p.run(inputs).detach()
    diff = (trained.double() - evaluated.double()).abs().max().item()
    if diff > 1e-5 * (1.0 + evaluated.abs().max().item()):
        raise CheckFailed(
            f"with dropout 0, its output in training mode differs from evaluation mode's by "
            f"{diff:.3g}: apart from dropout a part must compute the same function in both "
            "(statistics over the batch, or a scale applied in one mode only?)"
        )
