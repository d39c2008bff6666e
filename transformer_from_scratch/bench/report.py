"""Tables, JSON and a plot for attention benchmark results."""

import json
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from transformer_from_scratch.bench.attention import Result, memory_method


def machine(device: str) -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.1f}"


def _ratio(mine: float | None, base: float | None) -> str:
    return "-" if mine is None or base is None or base == 0 else f"{mine / base:.2f}x"


def tables(results: Sequence[Result], baseline: str) -> str:
    """One table per (length, mode): time, spread, TFLOP/s, peak memory, ratios to ``baseline``."""
    blocks = []
    keys = sorted({(r.case.length, r.case.mode) for r in results}, key=lambda k: (k[1], k[0]))
    for length, mode in keys:
        rows = [r for r in results if (r.case.length, r.case.mode) == (length, mode)]
        base = next((r for r in rows if r.case.kernel == baseline and r.status == "ok"), None)
        lines = [
            f"length {length}, {mode}",
            f"  {'kernel':14} {'median ms':>10} {'spread':>7} {'TFLOP/s':>8} {'peak MiB':>10} "
            f"{'time/' + baseline:>18} {'memory/' + baseline:>20}",
        ]
        for r in rows:
            if r.status != "ok" or r.timing is None:
                lines.append(f"  {r.case.kernel:14} {r.status:>10}  {r.message[:60]}")
                continue
            base_time = base.timing.median if base and base.timing else None
            lines.append(
                f"  {r.case.kernel:14} {r.timing.median * 1e3:10.2f} {r.timing.spread:6.0%} "
                f"{r.tflops or 0:8.3f} {_mib(r.peak_bytes):>10} "
                f"{_ratio(r.timing.median, base_time):>18} "
                f"{_ratio(r.peak_bytes, base.peak_bytes if base else None):>20}"
            )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def write_json(path: Path, results: Sequence[Result], device: str, baseline: str) -> None:
    """Results, the machine and the memory method, as JSON."""
    payload = {
        "machine": machine(device),
        "memory_method": memory_method(device),
        "baseline": baseline,
        "results": [r.to_dict() for r in results],
    }
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def read_json(path: Path) -> list[Result]:
    """Results recorded by :func:`write_json`."""
    payload = json.loads(path.read_text(encoding="utf-8"))
    return [Result.from_dict(row) for row in payload["results"]]


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from transformer_from_scratch.core.errors import TfsError

        raise TfsError(
            "--plot needs matplotlib: pip install 'transformer-from-scratch[plot]'"
        ) from None
    return plt


# Forward alone dashed, forward + backward solid: one colour per kernel carries both.
STYLES = {"fwd": "--", "fwd+bwd": "-"}


def plot(path: Path, results: Sequence[Result], title: str) -> None:
    """Save :func:`figure` as a PNG."""
    plt = _pyplot()
    drawn = figure(results, title)
    drawn.savefig(path, dpi=120)
    plt.close(drawn)


def figure(results: Sequence[Result], title: str) -> Any:
    """Time and peak memory against length: a colour per kernel, a line style per mode.

    The lengths measured are the tick labels; the legend sits below the plots, off the data.
    """
    plt = _pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, NullLocator

    drawn, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    kernels = sorted({r.case.kernel for r in results})
    colours = {k: plt.get_cmap("tab10")(i % 10) for i, k in enumerate(kernels)}
    for kernel, mode in sorted({(r.case.kernel, r.case.mode) for r in results}):
        rows = sorted(
            (r for r in results if (r.case.kernel, r.case.mode) == (kernel, mode)),
            key=lambda r: r.case.length,
        )
        rows = [r for r in rows if r.status == "ok" and r.timing is not None]
        lengths = [r.case.length for r in rows]
        values = (
            [r.timing.median * 1e3 for r in rows if r.timing],
            [(r.peak_bytes or 0) / 2**20 for r in rows],
        )
        for axis, ys in zip(axes, values, strict=True):
            axis.plot(lengths, ys, STYLES.get(mode, ":"), color=colours[kernel], marker="o", ms=4)
    lengths = sorted({r.case.length for r in results})
    for axis, label in zip(axes, ("median time (ms)", "peak memory (MiB)"), strict=True):
        axis.set(xscale="log", yscale="log", xlabel="sequence length (tokens)", ylabel=label)
        axis.xaxis.set_major_locator(FixedLocator(lengths))
        axis.xaxis.set_minor_locator(NullLocator())
        axis.set_xticks(lengths, [f"{n:,}" for n in lengths])
        axis.grid(True, which="major", alpha=0.3)
    handles = [Line2D([], [], color=colours[k], lw=2, label=k) for k in kernels]
    handles += [
        Line2D([], [], color="0.3", ls=style, label=mode)
        for mode, style in STYLES.items()
        if any(r.case.mode == mode for r in results)
    ]
    drawn.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    drawn.suptitle(title, fontsize=10)
    drawn.tight_layout(rect=(0, 0.08, 1, 1))
    return drawn
