"""Freed memory is kept for reuse: a training step's tensors come back without page faults."""

import os
import subprocess
import sys

import pytest

from transformer_from_scratch.core import allocator

# Six 20 MiB tensors, written and freed together (a training step frees most of what it made,
# and makes it again): where they lay, and whether the heap still holds their memory after.
# What glibc does here by default depends on what the process did before (its thresholds move
# as it runs); with freed memory kept, both answers are "yes" whatever came before.
PATTERN = """
import torch
{setup}
def heap():
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith("[heap]"):
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            return start, end
    return 0, 0
held = [torch.ones(5 << 20) for _ in range(6)]
start, end = heap()
inside = all(start <= t.data_ptr() < end for t in held)
del held
start, end = heap()
print(inside, end - start >= 6 * (20 << 20))
"""

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads the heap's extent from Linux's /proc"
)


def heap_kept(setup: str) -> tuple[bool, bool]:
    """(every tensor came from the heap, the heap kept their memory once freed), in a fresh
    Python process that runs ``setup`` first."""
    env = {k: v for k, v in os.environ.items() if k not in allocator.USER_SETTINGS}
    done = subprocess.run(
        [sys.executable, "-c", PATTERN.format(setup=setup)],
        capture_output=True, text=True, check=True, env=env, timeout=120,
    )  # fmt: skip
    inside, kept = done.stdout.split()[-2:]
    return inside == "True", kept == "True"


@pytest.fixture(scope="module")
def unchanged() -> tuple[bool, bool]:
    """The C library's own behaviour (the control): if it already keeps the memory, the check
    below would prove nothing."""
    answer = heap_kept("")
    if answer == (True, True):
        pytest.skip("this C library already serves and keeps these tensors from its heap")
    return answer


@pytest.mark.usefixtures("unchanged")
def test_kept_memory_stays_in_the_heap() -> None:
    setup = "from transformer_from_scratch.core.allocator import keep_freed_memory\n"
    setup += "assert keep_freed_memory()"
    assert heap_kept(setup) == (True, True)


@pytest.mark.usefixtures("unchanged")
def test_every_command_keeps_freed_memory() -> None:
    assert heap_kept("from transformer_from_scratch.cli import main\nmain(['list'])") == (
        True,
        True,
    )


def test_the_users_own_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000000")
    assert not allocator.keep_freed_memory()
