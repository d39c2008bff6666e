"""Pictures of what a model does inside: attention patterns, the logit lens, patching grids.

Each takes numbers already computed (from an ``ActivationCache`` or a ``PatchingResult``) and
writes one PNG; matplotlib is needed only here (``pip install 'transformer-from-scratch[plot]'``).
"""

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from transformer_from_scratch.core.errors import TfsError

if TYPE_CHECKING:
    from transformer_from_scratch.interp.patching import PatchingResult


def pyplot() -> Any:
    """matplotlib.pyplot on a file-only backend, or an error saying how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise TfsError(
            "pictures need matplotlib: pip install 'transformer-from-scratch[plot]'"
        ) from None
    return plt


def save(plt: Any, figure: Any, path: Path) -> None:
    """Write ``figure`` to ``path`` (folders made) and free it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def attention_patterns(patterns: Tensor, labels: Sequence[str], path: Path, title: str) -> None:
    """A grid of attention patterns: one row per layer, one column per head; queries down,
    keys across, each labelled with its token. ``patterns`` is ``[layer head query key]``."""
    plt = pyplot()
    layers, heads, n, _ = patterns.shape
    size = max(1.6, 0.16 * n + 0.8)
    figure, axes = plt.subplots(layers, heads, figsize=(size * heads, size * layers),
                                squeeze=False)  # fmt: skip
    for layer in range(layers):
        for head in range(heads):
            axis = axes[layer][head]
            axis.imshow(patterns[layer, head].float().numpy(), cmap="Blues", vmin=0, vmax=1)
            axis.set_title(f"layer {layer}, head {head}", fontsize=8)
            _token_ticks(axis, labels, head == 0, layer == layers - 1)
    figure.suptitle(f"{title}\n(row: a query token; column: the key it attends to; darker = more)",
                    fontsize=11)  # fmt: skip
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (size * layers)))
    save(plt, figure, path)


def _token_ticks(axis: Any, labels: Sequence[str], left: bool, bottom: bool) -> None:
    ticks = range(len(labels))
    axis.set_yticks(ticks, list(labels) if left else [""] * len(labels), fontsize=7)
    axis.set_xticks(ticks, list(labels) if bottom else [""] * len(labels), fontsize=7,
                    rotation=90)  # fmt: skip


def logit_lens(
    top_tokens: Sequence[Sequence[str]], top_probs: Tensor, labels: Sequence[str], path: Path,
    title: str,
) -> None:  # fmt: skip
    """The logit lens: for each layer (rows) and position (columns), the top next-token
    prediction read off the residual stream, written in its cell, coloured by its
    probability. ``top_probs`` is ``[layer position]``."""
    plt = pyplot()
    rows, columns = top_probs.shape
    figure, axis = plt.subplots(figsize=(max(4, 0.7 * columns + 2), max(2.5, 0.45 * rows + 1.5)))
    image = axis.imshow(top_probs.float().numpy(), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for r in range(rows):
        for c in range(columns):
            colour = "black" if float(top_probs[r, c]) > 0.6 else "white"
            axis.text(c, r, top_tokens[r][c], ha="center", va="center", fontsize=7, color=colour)
    axis.set_xticks(range(columns), list(labels), fontsize=7, rotation=90)
    axis.set_yticks(range(rows), [f"before block {r}" for r in range(rows - 1)] + ["output"],
                    fontsize=7)  # fmt: skip
    axis.set_xlabel("input token (the prediction is for the token after it)")
    figure.colorbar(image, ax=axis, label="probability of the top prediction")
    axis.set_title(title, fontsize=9)
    save(plt, figure, path)


def patching(
    result: "PatchingResult", path: Path, labels: Sequence[str] | None, title: str
) -> None:
    """A patching grid: layers down, positions (or heads) across, coloured by how much of the
    clean metric each patch restores (0: none, 1: all; red beyond)."""
    plt = pyplot()
    grid = result.normalised()
    layers, columns = grid.shape
    figure, axis = plt.subplots(figsize=(max(4, 0.5 * columns + 2), max(2.5, 0.4 * layers + 1.5)))
    bound = max(1.0, float(grid.abs().max()))
    image = axis.imshow(grid.numpy(), cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
    if result.by == "position" and labels is not None:
        axis.set_xticks(range(columns), list(labels), fontsize=7, rotation=90)
    else:
        axis.set_xticks(range(columns), [str(c) for c in range(columns)], fontsize=7)
    axis.set_xlabel("position (token)" if result.by == "position" else "head")
    axis.set_yticks(range(layers), [str(r) for r in range(layers)])
    axis.set_ylabel("layer")
    figure.colorbar(image, ax=axis, label="share of the clean metric restored")
    axis.set_title(title or f"patching {result.activation} by {result.by}", fontsize=9)
    save(plt, figure, path)
