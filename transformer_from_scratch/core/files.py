"""Crash-safe file writes: a temporary file in the same folder, fsync, rename, fsync the folder.

A process killed at any moment leaves either the old file or the new one, never a mixture;
on any error the temporary file is removed and the old file is untouched.
"""

import contextlib
import errno
import hashlib
import os
from pathlib import Path

from transformer_from_scratch.core.errors import CheckpointError


def write_atomically(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that a crash never leaves a partial file behind."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        sync_folder(path.parent)
    except OSError as err:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise CheckpointError(_why_not_saved(path, err)) from err
    return path


def sync_folder(folder: Path) -> None:
    """Flush a folder's entries (the rename) to disk, where the platform allows it."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's contents, read a piece at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while piece := handle.read(chunk):
            digest.update(piece)
    return digest.hexdigest()


def _why_not_saved(path: Path, err: OSError) -> str:
    reason = {
        errno.ENOSPC: "the disk is full",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EROFS: "the file system is read-only",
    }.get(err.errno or 0, err.strerror or str(err))
    return (
        f"could not save {path}: {reason}; the previous file (if any) is untouched and no "
        "temporary file was left behind. Free space, fix permissions or choose another --out"
    )
