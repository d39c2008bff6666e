"""Checks every kind must pass: contract shapes, gradients, determinism, dtypes, save/load."""

import safetensors.torch
import torch
from safetensors.torch import load as read_safetensors

from transformer_from_scratch.conformance.probes import Probe, probe
from transformer_from_scratch.conformance.results import CheckFailed, NotApplicable
from transformer_from_scratch.conformance.subject import Subject

BATCH, LENGTH = 3, 7


def _probe(subject: Subject, dtype: torch.dtype = torch.float32, seed: int = 0) -> Probe:
    return probe(subject, subject.decoder(seed).to(dtype).eval())


def _moved_probe(subject: Subject) -> Probe:
    """For properties that must hold whatever the parameters: with every one moved off its
    initial value (a mixing weight that starts at zero mixes nothing until trained)."""
    return probe(subject, subject.moved_decoder().eval())


def check_builds(subject: Subject) -> None:
    """It builds inside a tiny decoder and returns an nn.Module."""
    try:
        subject.decoder()
    except Exception as exc:
        raise CheckFailed(
            f"building a tiny decoder with it raised {type(exc).__name__}: {exc}"
        ) from exc


def check_output_contract(subject: Subject) -> None:
    """Its output has the shape and dtype its kind's contract promises."""
    p = _probe(subject)
    out = p.run(p.inputs(BATCH, LENGTH))
    expected = p.output_shape(BATCH, LENGTH)
    if tuple(out.shape) != expected:
        raise CheckFailed(
            f"output shape {tuple(out.shape)}; the {subject.kind} contract promises {expected}"
        )
    if out.dtype != torch.float32:
        raise CheckFailed(
            f"output dtype {out.dtype} for float32 inputs and weights; expected torch.float32"
        )


def check_finite(subject: Subject) -> None:
    """Its outputs are finite (no NaN or infinity) on ordinary inputs."""
    p = _probe(subject)
    out = p.call(p.inputs(BATCH, LENGTH))
    bad = (~torch.isfinite(out)).nonzero()
    if len(bad):
        where = tuple(bad[0].tolist())
        raise CheckFailed(
            f"{len(bad)} non-finite outputs, the first at index {where}: {out[where].item()}"
        )


def check_gradient_reaches_every_parameter(subject: Subject) -> None:
    """A loss on its output sends a gradient to every entry of every parameter, when the input
    holds every token id and every position (an entry nothing reads can never learn).

    Parameters are first moved off their initial values: a zero-initialised gate (ReZero,
    LayerScale) blocks its sublayer's gradient only until its first step. A position encoding
    is held to whole parameters only: it may keep entries for distances longer than the
    context checked (T5's logarithmic buckets reach 128); ``check_far_positions`` reads its
    far end instead."""
    p = probe(subject, subject.moved_decoder().train())
    outside = _learnable_outside_parameters(p.owner)
    if outside:
        raise CheckFailed(
            f"{', '.join(outside)} require(s) a gradient but is not an nn.Parameter (a buffer or "
            "a plain tensor attribute): the optimizer updates parameters only, so it never "
            "learns. Wrap it in nn.Parameter (or, if it is meant to stay fixed, a buffer without "
            "requires_grad)"
        )
    params = dict(p.owner.named_parameters())
    if not params:
        raise NotApplicable("it has no parameters")
    out = p.run(_covering_inputs(p))
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
    dead = [n for n, w in params.items() if w.grad is None or not bool(w.grad.abs().sum() > 0)]
    if dead:
        raise CheckFailed(
            f"no gradient reaches parameter(s) {', '.join(dead)}: they can never learn"
        )
    if subject.kind == "positional":
        return  # it may hold distances a short context never reaches (T5's far buckets)
    partly = [_dead_entries(n, w) for n, w in params.items() if _has_zero(w.grad)]
    if partly:
        raise CheckFailed(
            f"{'; '.join(partly)}, although the input held every token id and every position: "
            "those entries are never read (a slice, a fixed size, a masked row), so they can "
            "never learn"
        )


def _covering_inputs(p: Probe) -> dict[str, torch.Tensor]:
    """Random inputs over the whole context, in which every token id appears."""
    dims = p.decoder.spec.dims
    batch = max(BATCH, -(-dims.d_vocab // dims.n_ctx))
    inputs = p.inputs(batch, dims.n_ctx)
    if "tokens" in inputs:
        generator = torch.Generator().manual_seed(3)
        order = torch.randperm(batch * dims.n_ctx, generator=generator) % dims.d_vocab
        inputs["tokens"] = order.view(batch, dims.n_ctx).to(inputs["tokens"].device)
    return inputs


def _has_zero(grad: torch.Tensor | None) -> bool:
    return grad is not None and bool((grad == 0).any())


def _dead_entries(name: str, param: torch.nn.Parameter) -> str:
    assert param.grad is not None
    zero = param.grad == 0
    first = tuple(zero.nonzero()[0].tolist())
    return (
        f"{int(zero.sum())} of {param.numel()} entries of parameter {name} "
        f"{tuple(param.shape)} get no gradient (the first at index {first})"
    )


def _learnable_outside_parameters(owner: torch.nn.Module) -> list[str]:
    """Tensors of ``owner`` (or its submodules) made to learn without being parameters:
    buffers that require a gradient, and leaf tensors requiring one kept as plain attributes
    (``self.w = torch.randn(..., requires_grad=True)``)."""
    found = [name for name, buffer in owner.named_buffers() if buffer.requires_grad]
    for path, module in owner.named_modules():
        for name, value in vars(module).items():
            is_plain = isinstance(value, torch.Tensor) and not isinstance(value, torch.nn.Parameter)
            if is_plain and value.requires_grad and value.is_leaf:
                found.append(f"{path}.{name}" if path else name)
    return found


def check_eval_deterministic(subject: Subject) -> None:
    """In eval mode, the same input gives exactly the same output twice, an output is the
    caller's to keep (a later call does not write into it), and torch's random number generator
    is left as it was (nothing is drawn, nothing reseeded)."""
    p = _probe(subject)
    inputs, other = p.inputs(BATCH, LENGTH), p.inputs(BATCH, LENGTH, seed=1)
    torch.rand(7)  # off the state any seed gives, so that reseeding shows
    state = torch.get_rng_state()
    with torch.no_grad():  # as evaluation and sampling run it
        first = p.run(inputs)
        kept = first.clone()
        p.run(other)
        overwritten = not torch.equal(first, kept)
        second = p.run(inputs)
    if overwritten:
        raise CheckFailed(
            "a call on other inputs changed the output an earlier call returned: the output is "
            "a buffer the part writes into again (kept between calls?), so whatever a caller "
            "kept (a cached activation, the previous step's logits) changes under it. Return a "
            "new tensor from each call"
        )
    if not torch.equal(kept, second):
        diff = (kept - second).abs().max().item()
        raise CheckFailed(
            f"two eval-mode runs on one input differ by up to {diff:.3g}; is dropout or sampling "
            "left on?"
        )
    if not torch.equal(torch.get_rng_state(), state):
        raise CheckFailed(
            "an eval-mode run changed the state of torch's random number generator: it draws "
            "random numbers, or reseeds the generator (torch.manual_seed), where nothing is "
            "random; reseeding also makes every later draw of the run (data order, dropout) "
            "repeat. Draw only while training, from the generator as it is"
        )


def check_batch_independent(subject: Subject) -> None:
    """Changing one sample of a batch never changes the outputs of the others."""
    p = _moved_probe(subject)
    inputs = p.inputs(BATCH, LENGTH)
    other = p.inputs(BATCH, LENGTH, seed=1)
    changed = {k: v.clone() for k, v in inputs.items()}
    for k in changed:
        changed[k][1] = other[k][1]
    before, after = p.run(inputs), p.run(changed)
    for sample in (0, 2):
        if not torch.allclose(before[sample], after[sample], atol=1e-6):
            diff = (before[sample] - after[sample]).abs().max().item()
            raise CheckFailed(
                f"changing sample 1 changed sample {sample}'s output by {diff:.3g}: samples are "
                "mixed across the batch"
            )


def check_position_wise(subject: Subject) -> None:
    """Changing one position's input changes no other position's output: each acts alone.

    Moving information between positions is attention's job; an embedding, a norm, an MLP or
    an unembedding that mixes positions (a running mean, a shift, statistics over the sequence)
    breaks the residual stream's bookkeeping even when it stays causal."""
    p = _moved_probe(subject)
    inputs, other = p.inputs(BATCH, LENGTH), p.inputs(BATCH, LENGTH, seed=1)
    before = p.run(inputs).detach()
    tolerance = 1e-6 + 1e-5 * float(before.abs().amax())  # (rounding, not mixing)
    for moved in range(LENGTH):  # each position in turn (a part may read only the first, ...)
        changed = {k: v.clone() for k, v in inputs.items()}
        for k, dim in p.input_pos_dims.items():
            changed[k].select(dim, moved).copy_(other[k].select(dim, moved))
        diff = (p.run(changed).detach() - before).abs().transpose(0, p.output_pos_dim)
        worst = diff.reshape(LENGTH, -1).amax(1)
        worst[moved] = 0.0
        if bool((worst > tolerance).any()):
            hit = int(worst.argmax())
            raise CheckFailed(
                f"changing position {moved}'s input changed the output at "
                f"({'earlier' if hit < moved else 'later'}) position {hit} by "
                f"{float(worst[hit]):.3g}: a part of kind {subject.kind} must act on each "
                "position alone (no sums, means, running totals or shifts over positions; that "
                "is attention's job)"
            )


def _run_in(subject: Subject, dtype: torch.dtype) -> torch.Tensor:
    p = _probe(subject, dtype)
    try:
        out = p.run(p.inputs(BATCH, LENGTH))
    except Exception as exc:
        raise CheckFailed(f"running in {dtype} raised {type(exc).__name__}: {exc}") from exc
    if out.dtype != dtype:
        raise CheckFailed(f"in {dtype} it returned {out.dtype}: keep the input's dtype")
    return out


def check_float64(subject: Subject) -> None:
    """It runs in float64, returns float64, and agrees with its float32 self."""
    out64 = _run_in(subject, torch.float64)
    out32 = _run_in(subject, torch.float32)
    diff = (out64.float() - out32).abs().max().item()
    if diff > 1e-3:
        raise CheckFailed(f"float64 and float32 outputs differ by {diff:.3g} (more than 1e-3)")


def check_bfloat16(subject: Subject) -> None:
    """It runs in bfloat16 and returns finite bfloat16 values."""
    out = _run_in(subject, torch.bfloat16)
    if not torch.isfinite(out.float()).all():
        raise CheckFailed("bfloat16 outputs are not all finite")


def check_safetensors_round_trip(subject: Subject) -> None:
    """Its state, saved with safetensors and loaded into a fresh copy, reproduces its outputs.

    The copy is built under another seed, so that anything random kept outside the state (a
    non-persistent buffer) differs there, as it does in another process loading a checkpoint."""
    p = _probe(subject)
    state = p.owner.state_dict()
    if not state:
        raise NotApplicable("it has no saved state (no parameters or persistent buffers)")
    blob = safetensors.torch.save({k: v.contiguous() for k, v in state.items()})
    fresh = _probe(subject, seed=1)
    fresh.decoder.load_state_dict(p.decoder.state_dict())  # the other parts as they were
    with torch.no_grad():  # scramble the copy's own state, so only loading can restore it
        for tensor in fresh.owner.state_dict().values():
            if tensor.is_floating_point():
                tensor.normal_()
    fresh.owner.load_state_dict(read_safetensors(blob))
    inputs = p.inputs(BATCH, LENGTH)
    if not torch.equal(p.run(inputs), fresh.run(inputs)):
        raise CheckFailed(
            "a copy loaded from its saved state gives different outputs: is some state not in "
            "state_dict()?"
        )


def check_moves_device(subject: Subject) -> None:
    """Moved to a CUDA device it still works and agrees with the CPU."""
    if not torch.cuda.is_available():
        raise NotApplicable("no CUDA device here (float64/bfloat16 moves are checked separately)")
    p = _probe(subject)
    inputs = p.inputs(BATCH, LENGTH)
    cpu = p.run(inputs)
    gpu = probe(subject, p.decoder.to("cuda"))
    out = gpu.run({k: v.to("cuda") for k, v in inputs.items()}).cpu()
    if not torch.allclose(out, cpu, atol=1e-4, rtol=1e-3):
        raise CheckFailed(
            f"on CUDA the outputs differ from the CPU's by {(out - cpu).abs().max().item():.3g}"
        )
