"""Honest peak memory of one call: the CUDA allocator's peak, or the process's resident peak.

On the CPU there is no allocator to ask, so each benchmark case runs in its own process and the
kernel's peak resident set size (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``) is
read after one call, minus the resident size just before it. Memory freed and kept by the C
allocator is counted as the process saw it, which is what a user's machine would see.
"""

from collections.abc import Callable
from pathlib import Path

import torch

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int:
    for line in STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"{field} not in {STATUS}")


def cpu_method() -> str:
    """How CPU peaks are measured here."""
    return "peak RSS (VmHWM, reset per case), own process" if CLEAR_REFS.exists() else "unavailable"


def peak_bytes(fn: Callable[[], object], device: torch.device) -> int | None:
    """Extra bytes at the peak of one call of ``fn`` (``None`` where it cannot be measured)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    if not CLEAR_REFS.exists():
        return None
    CLEAR_REFS.write_text("5")
    before = _status_kib("VmRSS")
    fn()
    return max(0, (_status_kib("VmHWM") - before) * 1024)
