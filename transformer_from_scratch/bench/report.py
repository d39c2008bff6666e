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


def plot(path: Path, results: Sequence[Result], title: str) -> None:
    """A PNG of time and peak memory against length, one line per kernel and mode."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from transformer_from_scratch.core.errors import TfsError

        raise TfsError(
            "--plot needs matplotlib: pip install 'transformer-from-scratch[plot]'"
        ) from None
    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    for kernel, mode in sorted({(r.case.kernel, r.case.mode) for r in results}):
        rows = sorted(
            (
                r
                for r in results
                if (r.case.kernel, r.case.mode) == (kernel, mode) and r.status == "ok"
            ),
            key=lambda r: r.case.length,
        )
        lengths = [r.case.length for r in rows]
        style = "-" if mode == "fwd+bwd" else "--"
        time_axis.plot(
            lengths,
            [r.timing.median * 1e3 for r in rows if r.timing],
            style,
            marker="o",
            label=f"{kernel} {mode}",
        )
        memory_axis.plot(
            lengths,
            [(r.peak_bytes or 0) / 2**20 for r in rows],
            style,
            marker="o",
            label=f"{kernel} {mode}",
        )
    for axis, label in ((time_axis, "median time (ms)"), (memory_axis, "peak memory (MiB)")):
        axis.set(xscale="log", yscale="log", xlabel="sequence length", ylabel=label)
        axis.grid(True, which="both", alpha=0.3)
    time_axis.legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
