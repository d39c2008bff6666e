"""How much memory a spec needs, known before a single weight is allocated.

Parameters are counted by building the parts on PyTorch's ``meta`` device (shapes, no data):
the embedding, unembedding and final norm once, and one block per distinct layer layout, so
a spec of a billion layers is counted in milliseconds. Training adds a gradient per weight,
AdamW's two moments, and the activations kept for the backward pass. Those follow the form of
Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models", §4):
per layer, ``s·b·h·(c1 + c2·a·s/h)`` numbers for sequence length s, batch b, width h and a
heads. Their c1 = 17, c2 = 2.5 (34 and 5 half-precision bytes) describe Megatron; this
implementation keeps more (the textbook kernel holds its weights, the MLP its
pre-activation), and c1 = 31, c2 = 1.4 are fitted to peaks measured on a CPU while the
materialized kernel kept its whole score matrix, as it still does on a GPU
(``benchmarks/memory_estimate.py``, within about 10 % then). On a CPU it now keeps only the
visible blocks, and the estimate runs 10-40 % high there. Logits add 3·b·s·vocab floats.

Across devices: data parallelism (``ddp``) keeps a whole copy of weights, gradients and
optimizer state on each; fully sharded data parallelism (``fsdp``, ZeRO stage 3: Rajbhandari
et al. 2020) keeps 1/N of each, plus the blocks gathered whole for compute — the one running and
the one prefetched — and that block's full gradient before it is reduced and scattered.
Activations are per device either way, for the batch each device holds.
"""

import os
from pathlib import Path

import attrs
import torch

from transformer_from_scratch.core.errors import TfsError
from transformer_from_scratch.core.spec import DecoderSpec

GiB = 1024**3
ACTIVATION_C1, ACTIVATION_C2 = 31.0, 1.4
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}
PARALLEL = ("ddp", "fsdp")


@attrs.frozen
class MemoryEstimate:
    """Bytes for weights, gradients, optimizer state and activations (0 when not training)."""

    parameters: int
    weights: int
    gradients: int
    optimizer: int
    activations: int
    gathered: int = 0  # fsdp: blocks gathered whole for compute, and one block's gradient

    @property
    def total(self) -> int:
        """Everything together."""
        return self.weights + self.gradients + self.optimizer + self.activations + self.gathered

    def table(self) -> str:
        """A few lines a person reads."""
        rows = [("parameters", f"{self.parameters:,}"), ("weights", _gib(self.weights)),
                ("gradients", _gib(self.gradients)), ("optimizer (AdamW)", _gib(self.optimizer)),
                ("activations", _gib(self.activations)),
                ("gathered blocks", _gib(self.gathered)), ("total", _gib(self.total))]  # fmt: skip
        shown = [r for r in rows if r[0] in ("parameters", "total") or r[1] != _gib(0)]
        return "\n".join(f"{name:<18} {value:>14}" for name, value in shown)


def _gib(count: int) -> str:
    return f"{count / GiB:,.3f} GiB"


def estimate(spec: DecoderSpec, parameters: int, *, batch: int = 0, context: int | None = None,
             dtype: str = "float32", parallel: str = "ddp", world_size: int = 1,
             block_parameters: int = 0) -> MemoryEstimate:  # fmt: skip
    """The estimate per device for ``parameters`` weights; ``batch`` (per device) > 0 adds
    training's share; ``fsdp`` shards it over ``world_size`` devices (``block_parameters``: the
    largest block's, gathered whole while it computes)."""
    if parallel not in PARALLEL:
        raise TfsError(f"parallel mode {parallel!r}: choose one of {', '.join(PARALLEL)}")
    shards = world_size if parallel == "fsdp" else 1
    weights = -(-parameters * 4 // shards)  # weights stay float32 (bfloat16 is autocast)
    gathered = 2 * block_parameters * 4 if shards > 1 else 0
    if batch <= 0:
        return MemoryEstimate(parameters, weights, 0, 0, 0, gathered)
    size = BYTES[dtype]
    s, h, a = context or spec.n_ctx, spec.d_model, spec.n_heads
    per_layer = s * batch * h * (ACTIVATION_C1 + ACTIVATION_C2 * a * s / h) * size
    logits = 3 * batch * s * spec.d_vocab * 4
    activations = int(spec.n_layers * per_layer + logits)
    gathered += block_parameters * 4 if shards > 1 else 0  # a block's unreduced gradient
    return MemoryEstimate(parameters, weights, weights, 2 * weights, activations, gathered)


def available(device: torch.device | None = None) -> int | None:
    """Bytes free on ``device`` (the CPU's available memory by default), if it can be told."""
    if device is not None and device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def require_fits(need: MemoryEstimate, what: str, device: torch.device | None = None,
                 per_layer: int | None = None, layers: int | None = None) -> None:  # fmt: skip
    """Refuse, with the estimate and what would fit, when ``need`` exceeds what is free."""
    free = available(device)
    if free is None or need.total <= free:
        return
    hint = ""
    if per_layer and layers:
        fixed = need.total - per_layer * layers
        fits = max(0, (free - fixed) // per_layer)
        hint = (
            f" At this width about {fits:,} layers would fit (n_layers = {fits})."
            if fits
            else " Not even one layer fits at this width: reduce d_model, d_mlp or d_vocab."
        )
    raise TfsError(
        f"{what} needs about {_gib(need.total)} but {device or 'this machine'} has "
        f"{_gib(free)} available, so nothing was allocated:\n{need.table()}\n"
        f"{hint.strip() + ' ' if hint else ''}Use a smaller spec (n_layers, d_model, d_vocab), "
        "a smaller --batch-size (or the same batch in more --accumulate passes) or --context, "
        "or a machine with more memory."
    )
