"""Checks that a part's backward pass is the derivative of its forward pass, for every kind.

Kernels are also compared with the textbook formula's gradients (``checks_kernel``); every
other kind has no formula to compare with, but a hand-written backward (as layer norm's and
GELU's are here) can still be compared with the forward pass itself, by finite differences.
"""

import torch
from torch import Tensor

from transformer_from_scratch.conformance.checks_common import BATCH, LENGTH
from transformer_from_scratch.conformance.probes import Inputs, Probe, probe
from transformer_from_scratch.conformance.results import CheckFailed, NotApplicable
from transformer_from_scratch.conformance.subject import Subject

# Steps, relative to each tensor's size (weights start near 0.02). The derivative must match
# the differences at one of them: a large step rises above the rounding of a part that computes
# in float32 inside; a small one crosses no kink such as ReLU's at 0. A wrong term matches none.
STEPS = (1e-3, 1e-4, 1e-5, 1e-6)
TOLERANCE = 2e-3  # relative


def check_backward_is_derivative(subject: Subject) -> None:
    """Its gradients for each input and each parameter are the derivative of its outputs.

    In float64, along a random direction in one input or parameter at a time, the change
    autograd predicts, ``sum(w * J u)``, must match the change the forward pass shows between
    two nearby points, ``(f(x + h u) - f(x - h u)) / 2h``: a hand-written backward with a
    missing or wrong term differs, however well its forward pass matches anything.
    """
    p = probe(subject, subject.decoder().double().eval())
    inputs = p.inputs(BATCH, LENGTH)
    # (what, input name, parameter): an input is replaced in the inputs, a parameter moved
    targets: list[tuple[str, str, Tensor | None]] = [
        (f"input {n}", n, None) for n, x in sorted(inputs.items()) if x.is_floating_point()
    ]
    targets += [(f"parameter {n}", n, w) for n, w in p.owner.named_parameters() if w.requires_grad]
    if not targets:
        raise NotApplicable("it has neither floating-point inputs nor parameters")
    generator = torch.Generator().manual_seed(3)
    shape = p.call(inputs).shape
    for what, name, param in targets:
        tensor = inputs[name] if param is None else param
        size = max(float(tensor.detach().square().mean().sqrt()), 1e-2)
        along = size * torch.randn(tensor.shape, generator=generator).double()
        weights = torch.randn(shape, generator=generator).double()
        predicted = _predicted(p, inputs, name, param, along, weights)
        observed = [_observed(p, inputs, name, param, step * along, weights) / step
                    for step in STEPS]  # fmt: skip
        closest = min(observed, key=lambda o: abs(o - predicted))
        if abs(predicted - closest) > TOLERANCE * max(abs(closest), abs(predicted), 1e-9):
            raise CheckFailed(
                f"along a random direction in {what}, its gradient predicts a change of "
                f"{predicted:.6g} and its outputs change by {closest:.6g}: the backward pass "
                "is not the derivative of the forward pass (is a hand-written backward missing "
                "a term, or is something detached?)"
            )


def _predicted(p: Probe, inputs: Inputs, name: str, param: Tensor | None, along: Tensor,
               weights: Tensor) -> float:  # fmt: skip
    """The derivative of ``sum(weights * out)`` along ``along``, by autograd, in the input
    ``name`` (``param`` None) or in ``param``."""
    given = dict(inputs)
    if param is None:
        given[name] = tensor = inputs[name].detach().clone().requires_grad_()
    else:
        tensor = param
    out = p.call(given)
    (grad,) = torch.autograd.grad((out * weights).sum(), [tensor], allow_unused=True)
    return 0.0 if grad is None else float((grad * along).sum())


def _observed(p: Probe, inputs: Inputs, name: str, param: Tensor | None, shift: Tensor,
              weights: Tensor) -> float:  # fmt: skip
    """Half the change of ``sum(weights * out)`` between ``shift`` either side (with gradients
    on, so both take the path training takes); divided by the step, the derivative."""
    sides = []
    for sign in (1.0, -1.0):
        given = dict(inputs)
        with torch.no_grad():
            if param is None:
                given[name] = inputs[name] + sign * shift
            else:
                param.add_(shift, alpha=sign)
        sides.append(float((p.call(given).detach() * weights).sum()))
        if param is not None:
            with torch.no_grad():
                param.sub_(shift, alpha=sign)
    return (sides[0] - sides[1]) / 2.0
