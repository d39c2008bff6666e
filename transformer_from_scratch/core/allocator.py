"""Keeping freed memory for reuse: what a command asks of the C library's ``malloc``.

On a CPU, PyTorch takes its tensors from the C library's ``malloc``. glibc's (Linux) returns
freed memory to the kernel when much of it lies free at the top of the heap (``trim``), and
serves large requests from fresh ``mmap``s, with thresholds it moves as the program runs. A
training step frees most of what it allocated (activations, gradients), and the next step
allocates it again: each page handed back comes back as a page fault, the kernel zeroing it
first. Measured on the reference's shapes (6 layers of 384, batch 16 x 256, 2-core CPU): the
decoder took about 15,000 minor page faults per step (60 MB zeroed again), the plain-PyTorch
reference none (its allocation order happened to leave nothing at the top), which cost the
decoder 1-3 % of its step time.

:func:`keep_freed_memory` fixes both thresholds for the process: requests up to 32 MiB (glibc's
ceiling for the ``mmap`` threshold on 64-bit machines) come from the heap, and up to 1 GiB of
freed memory stays mapped for the next step. The process's resident memory then stays at its
peak instead of shrinking between steps, as it would with PyTorch's own caching allocator on a
GPU. Every ``tfs`` command does this at start; a library user may call it. It does nothing
where the C library is not glibc, and nothing when ``MALLOC_MMAP_THRESHOLD_`` or
``MALLOC_TRIM_THRESHOLD_`` is set (the user's own choice wins).
"""

import ctypes
import os
import sys

# glibc's mallopt parameters (malloc.h) and the values asked for.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
HEAP_UP_TO = 32 << 20  # glibc's largest allowed mmap threshold on 64-bit machines
KEEP_UP_TO = 1 << 30  # freed memory kept at the heap's top before any is returned
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse (see the module's text); whether it did."""
    if not sys.platform.startswith("linux") or any(name in os.environ for name in USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # another C library (musl) or none by that name
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    # The mmap threshold first: setting either one stops glibc from moving both, and a trim
    # threshold alone would leave the mmap threshold where it stands (128 KiB at start).
    return bool(mallopt(M_MMAP_THRESHOLD, HEAP_UP_TO)) and bool(
        mallopt(M_TRIM_THRESHOLD, KEEP_UP_TO)
    )
