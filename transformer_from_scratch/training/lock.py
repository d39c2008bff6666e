"""One writer per run folder: an advisory lock on ``OUT/.lock`` naming the process that holds it.

The operating system releases the lock when its process ends, however it ends (SIGKILL
included), so a lock left by a killed run is simply free again: the next run takes it over and
says whose it was. The file itself only says who holds it, for the error message.
"""

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import IO, Any

from transformer_from_scratch.core.errors import TfsError

LOCK = ".lock"


def _try_lock(handle: IO[str]) -> bool:
    """Take an exclusive, non-blocking lock on ``handle``; False if another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined,unused-ignore]
        except OSError:
            return False
        return True
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _describe(owner: dict[str, Any]) -> str:
    started = owner.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    return (
        f"process {owner.get('pid', '?')} on {owner.get('host', '?')}, started {when}: "
        f"{owner.get('command', '?')}"
    )


def _owner(handle: IO[str]) -> dict[str, Any]:
    handle.seek(0)
    try:
        found = json.loads(handle.read() or "{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


class RunLock:
    """Held by the one process that writes into a run folder (see :meth:`acquire`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.handle: IO[str] | None = None
        self.previous: dict[str, Any] = {}

    def acquire(self) -> "RunLock":
        """Take the folder, or raise naming the live process that holds it."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise TfsError(
                f"--out {self.folder}: a run folder is needed, and {_blocker(self.folder)} is a "
                "file; choose another --out (nothing was changed)"
            ) from None
        handle = (self.folder / LOCK).open("a+", encoding="utf-8")
        if not _try_lock(handle):
            owner = _owner(handle)
            handle.close()
            raise TfsError(
                f"{self.folder} is being written by another training run ({_describe(owner)}); "
                "wait for it to finish or stop it, or choose another --out (nothing was changed)"
            )
        self.previous = _owner(handle)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
              "command": " ".join(os.path.basename(a) if i == 0 else a
                                  for i, a in enumerate(sys.argv))}  # fmt: skip
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(me))
        handle.flush()
        self.handle = handle
        return self

    @property
    def taken_over(self) -> str | None:
        """Who held the lock before, if a run ended without releasing it (killed, say)."""
        return _describe(self.previous) if self.previous else None

    def release(self) -> None:
        """Give the folder up (clearing the owner, so no one mistakes it for a killed run)."""
        if self.handle is None:
            return
        with contextlib.suppress(OSError):
            self.handle.seek(0)
            self.handle.truncate()
        self.handle.close()
        self.handle = None


def _blocker(folder: Path) -> Path:
    """The file that stands where ``folder`` (or one of the folders above it) should be."""
    for path in (folder, *folder.parents):
        if path.exists() and not path.is_dir():
            return path
    return folder
