"""Checks that hold outside the happy path: real activation sizes, other devices and dtypes."""

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from transformer_from_scratch.conformance.checks_common import BATCH, LENGTH
from transformer_from_scratch.conformance.probes import Inputs, Probe, probe
from transformer_from_scratch.conformance.results import CheckFailed, NotApplicable
from transformer_from_scratch.conformance.subject import Subject

# A trained residual stream has norms in the hundreds and single entries in the tens; trained
# weights are several times their initial scale. Queries and keys reach tens too.
INPUT_SCALE = {"residual": 40.0, "queries": 20.0, "keys": 20.0, "values": 20.0}
WEIGHT_SCALE = 10.0


def scaled(subject: Subject, dtype: torch.dtype) -> tuple[Probe, Inputs]:
    """An evaluation-mode probe with weight matrices WEIGHT_SCALE times their initial scale,
    and inputs INPUT_SCALE times their usual one (tracked by autograd)."""
    decoder = subject.decoder().to(dtype).eval()
    with torch.no_grad():
        for param in decoder.parameters():
            if param.dim() >= 2:
                param.mul_(WEIGHT_SCALE)
    p = probe(subject, decoder)
    inputs = {
        name: (x * INPUT_SCALE[name]).requires_grad_() if x.is_floating_point() else x
        for name, x in p.inputs(BATCH, LENGTH).items()
    }
    return p, inputs


def _where(name: str, t: Tensor) -> str | None:
    bad = (~torch.isfinite(t.float())).nonzero()
    return (
        f"{len(bad)} non-finite values in {name}, the first at {tuple(bad[0].tolist())}"
        if len(bad)
        else None
    )


def _first_non_finite(p: Probe, inputs: Inputs) -> str | None:
    """Where the output, or else the gradient of a random loss on it (for each tracked input
    and each parameter), first holds NaN or infinity; ``None`` if nowhere."""
    out = p.call(inputs)
    found = _where("the output", out)
    if found is not None:
        return found
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    (out.float() * weights).sum().backward()
    grads = {f"the gradient of {n}": x.grad for n, x in inputs.items() if x.requires_grad}
    grads |= {f"the gradient of parameter {n}": w.grad for n, w in p.owner.named_parameters()}
    return next((w for n, g in grads.items() if g is not None and (w := _where(n, g))), None)


def check_finite_at_scale(subject: Subject) -> None:
    """Outputs and gradients stay finite at a trained model's activation sizes, fp32 and bf16."""
    for dtype in (torch.float32, torch.bfloat16):
        p, inputs = scaled(subject, dtype)
        found = _first_non_finite(p, inputs)
        if found:
            sizes = ", ".join(f"{n} up to {float(x.detach().float().abs().max()):.0f}"
                              for n, x in inputs.items() if x.is_floating_point())  # fmt: skip
            raise CheckFailed(
                f"in {dtype}, with weights {WEIGHT_SCALE:g}x their initial scale and inputs of a "
                f"trained model's size ({sizes or 'token ids'}), {found}: is something like "
                "exp(x) computed where it can overflow? Use torch.sigmoid / torch.softmax or "
                "subtract the maximum first"
            )


# Inputs a model meets that random ones never are: a padding position's zero vector, a vector
# with no spread (all entries equal), one far below the weights' scale.
SMALL_INPUTS: dict[str, Callable[[Tensor], Tensor]] = {
    "zero vectors": torch.zeros_like,
    "vectors whose entries are all equal (2.5)": lambda x: torch.full_like(x, 2.5),
    "vectors of size 1e-20": lambda x: x * 1e-20,
}


def check_finite_on_small_inputs(subject: Subject) -> None:
    """Outputs and gradients stay finite for zero, constant and tiny input vectors."""
    p = probe(subject, subject.moved_decoder().eval())
    base = p.inputs(BATCH, LENGTH)
    if "tokens" in base:
        raise NotApplicable("its input is token ids, which have no size")
    for label, make in SMALL_INPUTS.items():
        found = _first_non_finite(p, {n: make(x).requires_grad_() for n, x in base.items()})
        p.owner.zero_grad()
        if found:
            raise CheckFailed(
                f"for inputs of {label}, {found}: is something divided by a norm, a spread or a "
                "sum that can be 0? Add an epsilon inside the square root (as layer norm does)"
            )


class _NeedsData(Exception):
    """The forward pass reads tensor values (``.tolist()``, ``.item()``), so meta cannot run it."""


class _MovedToCPU(Exception):
    """A floating-point tensor was moved to the CPU inside the forward pass."""


def _names_cpu(value: object) -> bool:
    return (isinstance(value, str) and value.startswith("cpu")) or (
        isinstance(value, torch.device) and value.type == "cpu"
    )


class _Watch(TorchFunctionMode):
    """Flags floating-point tensors moved to the CPU, and value reads that meta cannot serve."""

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (),
                           kwargs: Mapping[str, Any] | None = None) -> Any:  # fmt: skip
        kwargs = kwargs or {}
        first = args[0] if args else None
        floating = isinstance(first, Tensor) and first.is_floating_point()
        to_cpu = func is Tensor.to and any(map(_names_cpu, [*args[1:], kwargs.get("device")]))
        if floating and (func in (Tensor.cpu, Tensor.numpy) or to_cpu):
            raise _MovedToCPU(getattr(func, "__name__", str(func)))
        if isinstance(first, Tensor) and first.is_meta and func in _READS:
            raise _NeedsData(getattr(func, "__name__", str(func)))
        return func(*args, **kwargs)


_READS = {Tensor.tolist, Tensor.item, Tensor.__bool__, Tensor.cpu, Tensor.numpy, Tensor.nonzero,
          Tensor.__int__, Tensor.__float__, Tensor.__index__}  # fmt: skip
_ON_CPU = (
    "a tensor was moved to the CPU (.cpu(), .to('cpu')) or created there (torch.zeros, arange, "
    "... without device=): on a GPU this fails or copies every step; follow the input's device"
)


def _run_on(subject: Subject, dtype: torch.dtype, meta: bool) -> Tensor:
    decoder = subject.decoder().to(dtype)
    p = probe(subject, decoder.to("meta") if meta else decoder)
    inputs = p.inputs(BATCH, LENGTH)
    # Off meta, factories without a device land on meta and clash with the CPU inputs.
    context = _Watch() if meta else _Both()
    try:
        with context:
            return p.call(inputs)
    except (_NeedsData, _MovedToCPU):
        raise
    except (RuntimeError, NotImplementedError) as exc:
        if "device" in str(exc) or "meta" in str(exc):
            raise CheckFailed(f"{_ON_CPU} ({type(exc).__name__}: {exc})") from exc
        raise


class _Both(contextlib.ExitStack):
    """The CPU run: factories without a device make meta tensors; moves to the CPU watched."""

    def __enter__(self) -> "_Both":
        super().__enter__()
        self.enter_context(torch.device("meta"))
        self.enter_context(_Watch())
        return self


def check_follows_device(subject: Subject) -> None:
    """Outputs stay on the inputs' device and dtype: nothing is moved to the CPU or to float32.

    Proved without a GPU on PyTorch's ``meta`` device, which has shapes but no data. A part that
    must read values (say, positions as a Python list) is run on the CPU instead, with tensors
    made without a device sent to ``meta`` so that they clash, and moves to the CPU watched.
    """
    for dtype in (torch.float32, torch.bfloat16):
        try:
            try:
                out, where = _run_on(subject, dtype, meta=True), "meta"
            except _NeedsData:
                out, where = _run_on(subject, dtype, meta=False), "cpu"
        except (_MovedToCPU, _NeedsData) as moved:  # off meta, a read of a tensor made there
            raise CheckFailed(f"{_ON_CPU} (called .{moved})") from moved
        if out.device.type != where:
            raise CheckFailed(f"inputs on {where} gave an output on {out.device}: {_ON_CPU}")
        if out.dtype != dtype:
            raise CheckFailed(
                f"{dtype} inputs and weights gave {out.dtype}: keep the inputs' dtype"
            )


def check_autocast(subject: Subject) -> None:
    """Under bfloat16 autocast, as ``tfs train --dtype bfloat16`` runs it, it trains: the
    forward and backward passes run, and the logits and every gradient are finite, the logits
    within bfloat16's rounding of float32's.

    Autocast mixes dtypes where a bfloat16 model does not: matrix products come out in
    bfloat16 while a score bias, a softmax or a norm may stay in float32. A hand-written
    backward that multiplies a saved float32 tensor by a bfloat16 gradient fails only here
    (decorate it with ``torch.amp.custom_fwd`` / ``custom_bwd``, or cast to one dtype). Run with
    the tiny decoder's own positions and, where the part takes a score bias, with ALiBi's
    float32 one."""
    positionals: list[str | None] = [None]
    if subject.kind in ("attention", "attention_kernel") and subject.has("score_bias"):
        positionals.append("alibi")
    for positional in positionals:
        changes: dict[str, Any] = {} if positional is None else {"positional": positional}
        _trains_under_autocast(subject, changes, "" if positional is None else " with ALiBi")


def _trains_under_autocast(subject: Subject, changes: dict[str, Any], label: str) -> None:
    tokens = torch.randint(0, subject.sizes["d_vocab"], (BATCH, LENGTH),
                           generator=torch.Generator().manual_seed(0))  # fmt: skip
    exact = subject.moved_decoder(**changes).train()(tokens).detach()
    decoder = subject.moved_decoder(**changes).train()
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = decoder(tokens)
        logits.float().logsumexp(-1).mean().backward()
    except RuntimeError as exc:
        raise CheckFailed(
            f"under bfloat16 autocast{label} it raised RuntimeError: {exc}. Autocast hands it "
            "bfloat16 and float32 tensors together; a hand-written backward needs "
            "torch.amp.custom_fwd / custom_bwd, or one dtype chosen explicitly"
        ) from exc
    error = (logits.float() - exact).abs().max().item()
    if not error <= 0.05 * exact.abs().max().item():
        raise CheckFailed(
            f"under bfloat16 autocast{label} the logits are {error:.3g} off float32's (of "
            f"{exact.abs().max().item():.3g}), beyond bfloat16's rounding"
        )
    for name, param in decoder.named_parameters():
        if param.grad is not None and not bool(torch.isfinite(param.grad).all()):
            raise CheckFailed(
                f"under bfloat16 autocast{label} the gradient of {name} is not finite"
            )
