"""``tfs bench train``: training throughput and model FLOPs utilisation, side by side.

The from-scratch decoder and the plain-PyTorch reference (same shapes) are timed in alternating
rounds of a few optimiser steps each, so a noisy machine slows both alike; the ratio is what to
read. MFU divides achieved FLOP/s (``training_flops_per_token`` x tokens/s) by the peak FLOP/s of
a large matrix product measured on the spot in the same dtype.
"""

import contextlib
import statistics
import time
from collections.abc import Callable
from typing import Any

import attrs
import torch
from torch import nn

from transformer_from_scratch.bench.flops import peak_flops, sync, training_flops_per_token
from transformer_from_scratch.bench.reference import ReferenceGPT
from transformer_from_scratch.core.builder import build_decoder
from transformer_from_scratch.core.functional import token_loss
from transformer_from_scratch.core.spec import DecoderSpec


@attrs.frozen
class Throughput:
    """One model's measured training speed."""

    name: str
    tokens_per_s: float
    step_s: float
    mfu: float
    # Median over rounds of the reference's step time over this model's in the same round (each
    # ratio compares two runs made a moment apart, on a machine whose speed drifts). None
    # without a reference.
    vs_reference: float | None = None


def _step_fn(
    model: nn.Module, tokens: torch.Tensor, dtype: torch.dtype, accumulate: int = 1
) -> Callable[[], None]:
    """One optimiser step over ``accumulate`` forward and backward passes of ``tokens``."""
    fused = tokens.device.type == "cuda"  # one kernel for the whole update, as users do on GPUs
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
    device_type = tokens.device.type

    def step() -> None:
        context = (
            torch.autocast(device_type, dtype=dtype)
            if dtype != torch.float32
            else contextlib.nullcontext()
        )
        for _ in range(accumulate):
            with context:
                loss = token_loss(model(tokens[:, :-1]), tokens[:, 1:])
            (loss / accumulate).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def compare(
    spec: DecoderSpec,
    *,
    batch: int,
    device: torch.device,
    dtype: torch.dtype,
    compile_models: bool,
    reference: bool,
    rounds: int = 3,
    steps_per_round: int = 2,
    accumulate: int = 1,
) -> tuple[list[Throughput], float]:
    """Throughput of the decoder (and the reference) and the measured peak FLOP/s; each
    optimiser step follows ``accumulate`` batches (gradient accumulation, as nanoGPT does)."""
    torch.manual_seed(0)
    context = spec.n_ctx
    tokens = torch.randint(0, spec.d_vocab, (batch, context + 1), device=device)
    decoder = build_decoder(spec).to(device)
    models: dict[str, nn.Module] = {"from-scratch": decoder}
    if reference:
        models["reference"] = ReferenceGPT(spec).to(device)
    if compile_models:
        models = {name: _compiled(m) for name, m in models.items()}
    steps = {name: _step_fn(m, tokens, dtype, accumulate) for name, m in models.items()}
    samples = _alternate(steps, device, rounds, steps_per_round)
    peak = peak_flops(device, dtype)
    per_token = training_flops_per_token(decoder, context)
    ratios = paired_ratios(samples, "reference")
    results = []
    for name, times in samples.items():
        seconds = statistics.median(times)
        rate = batch * context * accumulate / seconds
        results.append(Throughput(name, rate, seconds, per_token * rate / peak, ratios.get(name)))
    return results, peak


def paired_ratios(samples: dict[str, list[float]], baseline: str) -> dict[str, float]:
    """Each model's speed relative to ``baseline``: the median over rounds of the baseline's
    time over the model's time in the same round (nothing without the baseline)."""
    if baseline not in samples:
        return {}
    return {
        name: statistics.median(
            theirs / ours for theirs, ours in zip(samples[baseline], times, strict=True)
        )
        for name, times in samples.items()
    }


def _compiled(model: nn.Module) -> nn.Module:
    compiled: nn.Module = torch.compile(model)  # type: ignore[assignment]
    return compiled


def _alternate(
    steps: dict[str, Callable[[], None]], device: torch.device, rounds: int, per_round: int
) -> dict[str, list[float]]:
    """Seconds per step of each model in each round; the models take turns, and which goes
    first alternates between rounds (so neither always follows the other's memory traffic)."""
    for step in steps.values():  # warm-up (and compilation)
        step()
        step()
    sync(device)
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for round_ in range(rounds):
        order = list(steps.items())
        for name, step in order if round_ % 2 == 0 else reversed(order):
            start = time.perf_counter()
            for _ in range(per_round):
                step()
            sync(device)
            samples[name].append((time.perf_counter() - start) / per_round)
    return samples


def profile(
    spec: DecoderSpec, *, batch: int, device: torch.device, dtype: torch.dtype, rows: int = 15
) -> str:
    """Where one training step of the decoder spends its time (top operators by self time)."""
    torch.manual_seed(0)
    decoder = build_decoder(spec).to(device)
    tokens = torch.randint(0, spec.d_vocab, (batch, spec.n_ctx + 1), device=device)
    step = _step_fn(decoder, tokens, dtype)
    step()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        step()
        sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table: Any = prof.key_averages().table(sort_by=key, row_limit=rows)
    return str(table)
