"""Sharded checkpoints: each process writes its own shards; a manifest binds them together.

A folder holds::

    model/shard-0000R-model-00001-of-00001.safetensors      each process's weight shards
    optimizer/shard-0000R-model-00001-of-00001.safetensors  each process's AdamW moments
    state.safetensors                                       the run's other state (one process)
    checkpoint.json                                         the manifest, written last

The shards are written by ``torch.distributed.checkpoint`` in safetensors form (each file's
metadata says where its slices sit in the whole tensors), so they load into any number of
processes — the slices are re-cut on reading — and nothing in them is ever unpickled. The
manifest holds what a single-file checkpoint holds in its metadata (format, spec, providers,
tied names, tokenizer, step) and the SHA-256 of every other file in the folder, and is signed
with a digest of itself: a truncated, flipped, swapped, missing or extra file is refused before
a byte of it is read as a tensor.
"""

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from transformer_from_scratch.core.errors import CheckpointError
from transformer_from_scratch.core.files import sha256, sha256_file, write_atomically

MANIFEST = "checkpoint.json"
FORMAT = "transformer-from-scratch/sharded-checkpoint/1"
PARTS = ("model", "optimizer")


def write_shards(folder: Path, part: str, tensors: dict[str, torch.Tensor]) -> None:
    """Write this process's shards of ``tensors`` into ``folder/part`` (every process calls it)."""
    # Imported here: torch.distributed.checkpoint takes 0.6 s to import, and most uses of the
    # package never touch a sharded checkpoint.
    from torch.distributed.checkpoint.hf_storage import HuggingFaceStorageWriter
    from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

    plain = {name: tensor.detach() for name, tensor in tensors.items()}
    writer = HuggingFaceStorageWriter(str(folder / part), save_distributed=True)
    dcp_save(plain, storage_writer=writer)


def read_shards(folder: Path, part: str, template: dict[str, torch.Tensor], *,
                alone: bool = False) -> None:  # fmt: skip
    """Fill ``template``'s tensors (whole, or this process's shards of sharded ones) from
    ``folder/part``; ``alone``: this process reads without the others."""
    from torch.distributed.checkpoint.hf_storage import HuggingFaceStorageReader
    from torch.distributed.checkpoint.state_dict_loader import load as dcp_load

    reader = HuggingFaceStorageReader(str(folder / part))
    try:
        with warnings.catch_warnings():  # "assuming ... a single process": it is meant to
            warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
            dcp_load(template, storage_reader=reader, no_dist=alone)
    except Exception as err:
        raise CheckpointError(
            f"{folder / part} does not hold what this model needs: {_first_line(err)}"
        ) from None


def stored_names(folder: Path, part: str) -> list[str]:
    """The tensor names stored in ``folder/part`` (read from the files' headers only)."""
    names: set[str] = set()
    for path in sorted((folder / part).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            names.update(handle.keys())
    return sorted(names)


def write_manifest(folder: Path, record: dict[str, Any]) -> Path:
    """Write the manifest: ``record`` plus every file's SHA-256, signed; the last file written."""
    files = {
        path.relative_to(folder).as_posix(): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST and not path.name.startswith(".")
    }
    signed = {**record, "format": FORMAT, "files": files}
    signed["digest"] = _digest(signed)
    return write_atomically(folder / MANIFEST, json.dumps(signed, indent=2).encode())


def is_sharded(path: Path) -> bool:
    """Whether ``path`` is a sharded checkpoint's folder or manifest."""
    return path.name == MANIFEST or (path.is_dir() and (path / MANIFEST).exists())


def read_manifest(path: Path, *, check_files: bool = True) -> dict[str, Any]:
    """The manifest of the sharded checkpoint at ``path`` (its folder or manifest), after
    checking it and (unless ``check_files`` is false: checked already) every file it lists."""
    manifest = path if path.name == MANIFEST else path / MANIFEST
    folder = manifest.parent
    try:
        record = json.loads(manifest.read_bytes())
        if not isinstance(record, dict):
            raise TypeError("not a JSON object")
        files = dict(record["files"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"{manifest} is unreadable ({type(err).__name__}: {err}): the checkpoint's manifest "
            "is missing or damaged. Use an earlier checkpoint"
        ) from None
    if record.get("format") != FORMAT:
        raise CheckpointError(f"{manifest} is not a sharded checkpoint's manifest (format "
                              f"{record.get('format')!r}, expected {FORMAT!r})")  # fmt: skip
    if record.get("digest") != _digest(record):
        raise CheckpointError(f"{manifest} was edited or damaged: it does not match its own "
                              "digest. Use an earlier checkpoint")  # fmt: skip
    if check_files:
        _check_files(folder, files)
    return record


def _check_files(folder: Path, files: dict[str, str]) -> None:
    for name, digest in files.items():
        path = folder / name
        if not path.resolve().is_relative_to(folder.resolve()):
            raise CheckpointError(f"{folder / MANIFEST} lists {name!r}, outside its folder")
        if not path.is_file():
            raise CheckpointError(f"{path} is missing: the sharded checkpoint is incomplete. "
                                  "Use an earlier checkpoint")  # fmt: skip
        if sha256_file(path) != digest:
            raise CheckpointError(
                f"{path} is damaged or was replaced: it does not match the digest in "
                f"{folder / MANIFEST} (truncated, a flipped bit, or another file). Use an earlier "
                "checkpoint"
            )
    for part in PARTS:
        strays = [p.relative_to(folder).as_posix() for p in sorted((folder / part).glob("*"))
                  if p.relative_to(folder).as_posix() not in files]  # fmt: skip
        if strays:
            raise CheckpointError(
                f"{folder / part} holds files its manifest does not list ({', '.join(strays)}); "
                "they would be read as part of the checkpoint, so it is refused. Remove them"
            )


def _digest(record: dict[str, Any]) -> str:
    unsigned = {k: v for k, v in record.items() if k != "digest"}
    return sha256(json.dumps(unsigned, sort_keys=True).encode())


def _first_line(err: Exception) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:500]
