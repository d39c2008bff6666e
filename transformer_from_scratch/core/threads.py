"""How many torch threads a command uses: asked for, inherited, or chosen for a shared machine.

PyTorch starts one thread per core. When other processes also compute (a second run, a test
run, the workers of ``tfs check --jobs``, ``torchrun``'s processes), threads outnumber cores and
everything slows many times over. So unless told (``--threads``, ``TFS_THREADS``,
``OMP_NUM_THREADS``), a command takes the cores the machine is not already using, split among
the processes ``torchrun`` started on this machine.

"Already using" is measured, not averaged: the load average still counts a job that ended a
minute ago (a run started right after a test run took one core of two), so where the kernel
says how busy each core was (Linux's ``/proc/stat``) the machine is sampled for a moment, and
the load average is the fallback elsewhere. A command that is starting has not computed yet,
so every command also leaves a claim (its process id and thread count, in a folder under the
temporary directory, removed when it exits): two runs started together see each other's claim
even before either is busy. The first of them has already taken every idle core, so a training
run that chose its own count also looks at the claims every few seconds
(:func:`share_cores`): it gives threads back while runs started after it hold them (down to
one) and takes them back when those runs end.
"""

import atexit
import contextlib
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import attrs

from transformer_from_scratch.core.errors import TfsError

# Where each running command says how many threads it took (a file per process id).
CLAIMS = Path(tempfile.gettempdir()) / f"tfs-threads-{os.getuid() if hasattr(os, 'getuid') else 0}"
_SAMPLE_S = 0.25  # how long the machine is watched (a few scheduler ticks on each core)
_LEFT: set[Path] = set()  # this process's claims, withdrawn at exit


@attrs.define
class _Share:
    """What :func:`share_cores` needs: how many threads this process may use with no other
    command running (None: the count was given, not chosen), what it uses now, when it last
    looked."""

    most: int | None = None
    now: int = 1
    looked: float = 0.0


_SHARE = _Share()


def default_threads(one_is_best: bool = False, claims: Path | None = None) -> int:
    """The environment's choice, else 1 (``one_is_best``), else the idle cores per process."""
    return _choose(one_is_best, CLAIMS if claims is None else claims)[0]


def _choose(one_is_best: bool, claims: Path) -> tuple[int, int | None]:
    """The thread count, and the most this process may take when no other command runs
    (None where the count is not this module's to change: given, or torchrun's share)."""
    given = _environment_threads()
    if given is not None:
        return given, None
    if one_is_best:
        return 1, None
    cores = os.cpu_count() or 1
    local = os.environ.get("LOCAL_WORLD_SIZE", "1")
    processes = int(local) if local.isdigit() and int(local) > 0 else 1
    if processes > 1:  # torchrun's processes on this machine share its cores
        return max(1, cores // processes), None
    busy, others = busy_cores(cores), claimed_threads(claims)
    # Busy cores no command claims are someone else's work, assumed to stay.
    most = max(1, cores - round(max(0.0, busy - others)))
    return max(1, cores - round(max(busy, others))), most


def _environment_threads() -> int | None:
    """``TFS_THREADS`` (this project's own: anything but a whole number above 0 is refused),
    else ``OMP_NUM_THREADS`` (OpenMP's: a list such as ``4,2`` gives its outer level, 4; a
    value OpenMP would not take is left to OpenMP), else None."""
    text = os.environ.get("TFS_THREADS", "").strip()
    if text:
        if not (text.isdigit() and int(text) > 0):
            raise TfsError(f"TFS_THREADS = {text!r} must be a whole number of threads above 0 "
                           "(e.g. TFS_THREADS=2); unset it to let tfs choose")  # fmt: skip
        return int(text)
    first = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(first) if first.isdigit() and int(first) > 0 else None


def use_threads(threads: int | None, one_is_best: bool = False) -> int:
    """Set torch's thread count (``threads``, else :func:`default_threads`), leave this
    process's claim for commands started after it; returns the count."""
    import torch

    with _claims_locked(CLAIMS):  # (two commands starting together choose one after the other)
        chosen, most = (threads, None) if threads else _choose(one_is_best, CLAIMS)
        claim(chosen)
    torch.set_num_threads(chosen)
    _SHARE.most, _SHARE.now, _SHARE.looked = most, chosen, time.monotonic()
    return chosen


def share_cores(every: float = 3.0) -> int | None:
    """Between training steps: the new thread count if this process changed it (None if
    not), at most every ``every`` seconds. A process that chose its own count gives threads
    back to commands started after it, down to one, and takes them back when they end."""
    if _SHARE.most is None or time.monotonic() - _SHARE.looked < every:
        return None
    import torch

    with _claims_locked(CLAIMS):
        others = claimed_threads(CLAIMS)
        fair = max(1, min(_SHARE.most, (os.cpu_count() or 1) - others))
        if fair != _SHARE.now:
            claim(fair)
    _SHARE.looked = time.monotonic()
    if fair == _SHARE.now:
        return None
    torch.set_num_threads(fair)
    _SHARE.now = fair
    return fair


@contextlib.contextmanager
def _claims_locked(claims: Path) -> Iterator[None]:
    """Hold the claims folder's lock (where the system has ``fcntl``; nothing elsewhere)."""
    try:
        import fcntl

        if not _own_folder(claims):
            raise OSError(f"{claims} is not this user's folder")
        lock = (claims / "lock").open("a")
    except (ImportError, OSError):
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def busy_cores(cores: int) -> float:
    """How many of the machine's ``cores`` other work keeps busy right now (this process
    sleeps while it looks); the 1-minute load average where ``/proc/stat`` is not readable."""
    try:
        before = _cpu_times(Path("/proc/stat").read_text())
        time.sleep(_SAMPLE_S)
        after = _cpu_times(Path("/proc/stat").read_text())
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except (OSError, AttributeError):
            return 0.0
    return busy_fraction(before, after) * cores


def _cpu_times(text: str) -> tuple[int, int]:
    """``(busy, total)`` clock ticks of all cores together, from ``/proc/stat``'s first line
    (``cpu  user nice system idle iowait irq softirq steal ...``); waiting for a disk and
    idling count as free, time a hypervisor took for others (steal) as busy."""
    fields = [int(value) for value in text.splitlines()[0].split()[1:9]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def busy_fraction(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of time the cores were busy between two ``(busy, total)`` readings."""
    total = after[1] - before[1]
    return 0.0 if total <= 0 else min(1.0, max(0.0, (after[0] - before[0]) / total))


def claim(threads: int, claims: Path | None = None) -> None:
    """Record that this process computes with ``threads`` threads (until it exits)."""
    folder = CLAIMS if claims is None else claims
    mine = folder / str(os.getpid())
    with contextlib.suppress(OSError):  # a claim helps others; failing to leave one is harmless
        if not _own_folder(folder):
            return
        partial = mine.with_suffix(".partial")
        partial.write_text(str(threads))
        partial.replace(mine)  # (readers never see a half-written count)
        if mine not in _LEFT:
            _LEFT.add(mine)
            atexit.register(_withdraw, mine)


def _withdraw(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def claimed_threads(claims: Path) -> int:
    """Threads claimed by other live processes; claims left by processes that died without
    withdrawing them (killed) are removed."""
    return sum(threads for _, threads in _live_claims(claims))


def _own_folder(claims: Path) -> bool:
    """Make the claims folder if missing; whether it is a real folder of this user's (not a
    link, nor someone else's: the temporary directory is shared)."""
    try:
        claims.mkdir(mode=0o700, parents=True, exist_ok=True)
        found = os.lstat(claims)
    except OSError:
        return False
    mine = not hasattr(os, "getuid") or found.st_uid == os.getuid()
    return stat.S_ISDIR(found.st_mode) and mine


def _live_claims(claims: Path) -> Iterator[tuple[int, int]]:
    if not _own_folder(claims):
        return
    for path in claims.iterdir():
        if not path.name.isdigit() or int(path.name) == os.getpid():
            continue
        try:
            threads = int(path.read_text())
        except (OSError, ValueError):
            continue  # (being replaced, or not a claim)
        if _alive(int(path.name)):
            yield int(path.name), threads
        else:
            _withdraw(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # (not ours to signal, e.g. another user's: alive all the same)
    return True
