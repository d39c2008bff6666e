"""Is the run healthy? Non-finite gradients and weights, diverged weights, and loss spikes.

A checkpoint is the promise that training can go back to it, so nothing unhealthy is ever
written: :func:`unhealthy` is asked before every save.
"""

import math
from collections import deque

import attrs
import torch
from torch import nn
from torch.distributed.tensor import DTensor

# Weights this large are a diverged run, not a trained one: float32 products of two of them
# overflow, and no healthy transformer weight comes within orders of magnitude of it.
DIVERGED = 1e6


@torch.no_grad()
def _first_bad(named: list[tuple[str, torch.Tensor]], what: str) -> str | None:
    for name, value in named:
        tensor = value.to_local() if isinstance(value, DTensor) else value  # this process's shard
        if not tensor.is_floating_point():
            continue
        if not bool(torch.isfinite(tensor).all()):
            return f"{what} {name} holds NaN or infinity"
        largest = float(tensor.abs().max()) if tensor.numel() else 0.0
        if largest > DIVERGED:
            return f"{what} {name} has grown to {largest:.3g} (the run diverged)"
    return None


def unhealthy(model: nn.Module, optimizer: torch.optim.Optimizer) -> str | None:
    """Why the weights or optimizer state must not be saved, or ``None`` if they may."""
    found = _first_bad(list(model.named_parameters()), "parameter")
    if found:
        return found
    names = {id(p): n for n, p in model.named_parameters()}
    state = [
        (f"{names.get(id(param), '?')} ({key})", value)
        for param, entry in optimizer.state.items()
        for key, value in entry.items()
        if isinstance(value, torch.Tensor) and key != "step"
    ]
    return _first_bad(state, "the optimizer state of")


@attrs.define
class Spike:
    """A loss far above its recent mean."""

    step: int
    loss: float
    mean: float
    std: float

    def __str__(self) -> str:
        sigmas = (self.loss - self.mean) / self.std
        return (
            f"loss spike at step {self.step}: {self.loss:.4g}, {sigmas:.1f} standard deviations "
            f"above the mean of the last steps ({self.mean:.4g} +- {self.std:.2g})"
        )


@attrs.define
class SpikeDetector:
    """Flags a loss more than ``sigmas`` standard deviations above the mean of the last ``window``
    losses (once ``window`` have been seen)."""

    sigmas: float = 6.0
    window: int = 50
    recent: deque[float] = attrs.field(factory=deque)

    def observe(self, step: int, loss: float) -> Spike | None:
        """Record ``loss``; the spike it is, if it is one."""
        spike = None
        if len(self.recent) == self.window:
            mean = sum(self.recent) / self.window
            std = math.sqrt(sum((x - mean) ** 2 for x in self.recent) / self.window)
            std = max(std, 1e-3 * abs(mean), 1e-8)
            if loss > mean + self.sigmas * std:
                spike = Spike(step, loss, mean, std)
            self.recent.popleft()
        self.recent.append(loss)
        return spike
