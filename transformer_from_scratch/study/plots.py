"""A study's pictures: validation loss against steps, training time and FLOPs (one line per
variant at its best learning rate, a band over seeds), and each variant's learning-rate sweep."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformer_from_scratch.interp.plots import pyplot, save
from transformer_from_scratch.study.plan import Plan

AXES = {"step": "training step", "seconds": "training time (s)", "flops": "training FLOPs"}


def draw(
    folder: Path, report: dict[str, Any], records: Sequence[dict[str, Any]], plan: Plan
) -> list[Path]:
    """Write ``curves.png`` (three panels) and ``lr_sweep.png``; returns their paths."""
    plt = pyplot()
    best = {row["variant"]: row["best_lr"] for row in report["rows"] if row.get("seeds")}
    colours = {v.name: plt.get_cmap("tab10")(i % 10) for i, v in enumerate(plan.variants)}
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.4), sharey=True)
    for name, lr in best.items():
        runs = [r for r in records if r["variant"] == name and float(r["lr"]) == lr]
        for axis, key in zip(axes, AXES, strict=True):
            _band(axis, runs, key, colours[name], f"{name} (lr {lr:g})")
    for axis, label in zip(axes, AXES.values(), strict=True):
        axis.set(xlabel=label)
        axis.grid(True, alpha=0.3)
    axes[0].set_ylabel("validation loss (nats/token)")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), frameon=False)
    figure.suptitle(f"study {plan.name}: mean over seeds {list(plan.seeds)}, band = min..max",
                    fontsize=10)  # fmt: skip
    figure.tight_layout(rect=(0, 0.1, 1, 1))
    curves = folder / "curves.png"
    save(plt, figure, curves)
    return [curves, _sweep(plt, folder, report, colours)]


def _band(axis: Any, runs: list[dict[str, Any]], key: str, colour: Any, label: str) -> None:
    histories = [r["history"] for r in runs if r.get("history")]
    if not histories:
        return
    length = min(len(h) for h in histories)
    xs = [sum(h[i][key] for h in histories) / len(histories) for i in range(length)]
    losses = [[h[i]["val_loss"] for h in histories] for i in range(length)]
    axis.plot(xs, [sum(v) / len(v) for v in losses], color=colour, label=label, marker="o", ms=3)
    if len(histories) > 1:
        axis.fill_between(xs, [min(v) for v in losses], [max(v) for v in losses], color=colour,
                          alpha=0.2, linewidth=0)  # fmt: skip


def _sweep(plt: Any, folder: Path, report: dict[str, Any], colours: dict[str, Any]) -> Path:
    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    for row in report["rows"]:
        if not row.get("seeds"):
            continue
        lrs = sorted(float(lr) for lr in row["lr_sweep"])
        stats = [row["lr_sweep"][str(lr)] for lr in lrs]
        errors = [s["ci95"] or 0.0 for s in stats]
        axis.errorbar(lrs, [s["mean"] for s in stats], yerr=errors, color=colours[row["variant"]],
                      marker="o", ms=4, capsize=3, label=row["variant"])  # fmt: skip
    swept = sorted({float(lr) for row in report["rows"] for lr in row.get("lr_sweep", {})})
    axis.set(xscale="log", xlabel="peak learning rate", ylabel="final validation loss")
    axis.set_xticks(swept, [f"{lr:g}" for lr in swept])
    axis.xaxis.set_minor_locator(plt.NullLocator())
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    axis.set_title("learning-rate sweep: mean over seeds, 95 % interval", fontsize=10)
    path = folder / "lr_sweep.png"
    save(plt, figure, path)
    return path
