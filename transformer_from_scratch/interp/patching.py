"""Activation patching: which activations carry what tells a clean prompt from a corrupted one.

Run the model on a clean prompt and on a corrupted one of the same length; then, one at a time,
put one activation from the clean run into the corrupted run (one layer and position, or one
layer and head) and see how far a metric moves back towards its clean value (Meng et al. 2022,
"Locating and Editing Factual Associations in GPT"; Heimersheim & Nanda 2024, "How to use and
interpret activation patching")::

    result = patch(decoder, clean, corrupted, metric=logit_difference(answer, wrong))
    result.grid          # [layer position] (or [layer head]) values of the metric
    result.plot("patching.png", labels=tokens)
"""

from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import torch
from torch import Tensor

from transformer_from_scratch.core.activations import act_name
from transformer_from_scratch.core.decoder import Decoder
from transformer_from_scratch.core.errors import TfsError
from transformer_from_scratch.core.hooks import HookPoint
from transformer_from_scratch.core.shapes import Logits

Metric = Callable[[Logits], Tensor | float]
# Where each per-head activation keeps its head axis.
_HEAD_AXIS = {"q": 2, "k": 2, "v": 2, "z": 2, "pattern": 1, "attn_scores": 1}


def logit_difference(right: int, wrong: int, position: int = -1) -> Metric:
    """The logit of ``right`` minus that of ``wrong`` at ``position``, averaged over the batch."""

    def metric(logits: Logits) -> Tensor:
        at = logits[:, position]
        return (at[:, right] - at[:, wrong]).mean()

    return metric


@attrs.frozen
class PatchingResult:
    """The metric after each patch: ``grid[layer, column]``, columns positions or heads."""

    grid: Tensor
    activation: str
    by: str
    clean: float
    corrupted: float

    def normalised(self) -> Tensor:
        """0 where a patch changes nothing, 1 where it restores the clean metric entirely."""
        span = self.clean - self.corrupted
        if span == 0:
            raise TfsError("the clean and corrupted runs give the same metric: nothing to find")
        return (self.grid - self.corrupted) / span

    def plot(self, path: Path, labels: Sequence[str] | None = None, title: str = "") -> None:
        """Draw the grid as a PNG (see :func:`~transformer_from_scratch.interp.plots.patching`)."""
        from transformer_from_scratch.interp import plots

        plots.patching(self, path, labels, title)


@torch.no_grad()
def patch(
    decoder: Decoder,
    clean: Tensor,
    corrupted: Tensor,
    metric: Metric,
    activation: str = "resid_pre",
    by: str = "position",
) -> PatchingResult:
    """Patch ``activation`` (a short name: ``resid_pre``, ``attn_out``, ``z``, ...) from the
    clean run into the corrupted one at every layer and position (``by="position"``) or head
    (``by="head"``); returns the metric for each."""
    if clean.shape != corrupted.shape:
        raise TfsError(
            f"clean and corrupted prompts must have the same number of tokens to patch position "
            f"by position; got {tuple(clean.shape)} and {tuple(corrupted.shape)}"
        )
    if by not in ("position", "head"):
        raise TfsError(f"by={by!r}: patch by 'position' or by 'head'")
    if by == "head" and activation not in _HEAD_AXIS:
        raise TfsError(f"{activation!r} has no head axis; by head: {', '.join(_HEAD_AXIS)}")
    layers = len(decoder.blocks)
    names = [act_name(activation, layer) for layer in range(layers)]
    clean_logits, cache = decoder.run_with_cache(clean, names_filter=names)
    columns = clean.shape[1] if by == "position" else decoder.spec.n_heads
    grid = torch.zeros(layers, columns)
    for layer, name in enumerate(names):
        for column in range(columns):
            replace = _replacer(cache[name], activation, by, column)
            grid[layer, column] = float(
                metric(decoder.run_with_hooks(corrupted, [(name, replace)]))
            )
    return PatchingResult(grid, activation, by, float(metric(clean_logits)),
                          float(metric(decoder(corrupted))))  # fmt: skip


def _replacer(
    clean: Tensor, activation: str, by: str, column: int
) -> Callable[[Tensor, HookPoint], Tensor]:
    axis = _position_axis(activation) if by == "position" else _HEAD_AXIS[activation]

    def replace(value: Tensor, hook: HookPoint) -> Tensor:
        out = value.clone()
        out.select(axis, column).copy_(clean.select(axis, column))
        return out

    return replace


def _position_axis(activation: str) -> int:
    """Query position for patterns and scores ([batch head query key]); else axis 1."""
    return 2 if activation in ("pattern", "attn_scores") else 1
