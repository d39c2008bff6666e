"""The run folder: checkpoints with everything needed to resume exactly, written crash-safely.

Layout of ``--out``::

    latest.json                 written last, atomically: which checkpoint is complete, + hashes
    ckpt-0000200/model.safetensors   the decoder (spec, tokenizer, provenance in its metadata)
    ckpt-0000200/state.safetensors   optimizer, step, every RNG, the data sampler's position
    log.jsonl                   one JSON record per log line

A checkpoint is written into a new folder; only when both files are on disk is ``latest.json``
replaced to point at it, and only then is the previous folder removed. A process killed at any
moment therefore leaves ``latest.json`` naming a complete checkpoint (the new or the old one).
Nothing here is pickled: tensors go to safetensors, everything else to JSON.
"""

import json
import shutil
from pathlib import Path
from typing import Any

import attrs
import torch

from transformer_from_scratch.core.checkpoint import deserialise, save_decoder, serialise
from transformer_from_scratch.core.decoder import Decoder
from transformer_from_scratch.core.errors import CheckpointError
from transformer_from_scratch.core.files import sha256, write_atomically

STATE_FORMAT = "transformer-from-scratch/training-state/1"
LATEST = "latest.json"


@attrs.frozen
class Saved:
    """A complete checkpoint in a run folder."""

    step: int
    model: Path
    state: Path


def latest(out: Path) -> Saved | None:
    """The newest complete checkpoint in ``out``, checked against its recorded hashes."""
    pointer = out / LATEST
    if not pointer.exists():
        return None
    try:
        record = json.loads(pointer.read_text())
        folder = out / record["folder"]
        saved = Saved(
            int(record["step"]), folder / "model.safetensors", folder / "state.safetensors"
        )
        hashes = record["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"{pointer} is unreadable ({err}); delete it to start afresh"
        ) from None
    for path in (saved.model, saved.state):
        if not path.exists() or sha256(path.read_bytes()) != hashes.get(path.name):
            raise CheckpointError(
                f"{path} is missing or does not match {pointer}: the checkpoint was damaged "
                "after it was written"
            )
    return saved


def save(
    out: Path,
    step: int,
    decoder: Decoder,
    tokenizer: dict[str, Any],
    training_state: dict[str, torch.Tensor],
    info: dict[str, str],
) -> Saved:
    """Write a new checkpoint folder, then point ``latest.json`` at it, then drop the old one."""
    folder = out / f"ckpt-{step:07d}"
    model = save_decoder(decoder, folder / "model.safetensors", tokenizer=tokenizer,
                         extra={"step": str(step)})  # fmt: skip
    state = write_atomically(folder / "state.safetensors", serialise(training_state, {
        "format": STATE_FORMAT, "step": str(step), **info}))  # fmt: skip
    record = {
        "step": step,
        "folder": folder.name,
        "sha256": {p.name: sha256(p.read_bytes()) for p in (model, state)},
    }
    write_atomically(out / LATEST, json.dumps(record, indent=2).encode())
    for old in out.glob("ckpt-*"):  # the previous one, and any a crash left half-written
        if old != folder:
            shutil.rmtree(old, ignore_errors=True)
    return Saved(step, model, state)


def read_state(saved: Saved) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The training-state tensors and metadata of a checkpoint."""
    return deserialise(saved.state.read_bytes(), str(saved.state), STATE_FORMAT)


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    """The optimizer's tensors (flat names) and the rest as JSON."""
    full = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in full["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, json.dumps({"param_groups": full["param_groups"], "scalars": scalars})


def restore_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], text: str
) -> None:
    """Load what :func:`optimizer_state` saved."""
    extra = json.loads(text)
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = tensor
    for index, values in extra["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    groups = [
        {k: tuple(v) if k == "betas" else v for k, v in group.items()}
        for group in extra["param_groups"]
    ]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
