"""The run folder: checkpoints with everything needed to resume exactly, written crash-safely.

Layout of ``--out``::

    .lock                       held by the one process writing here (see ``training.lock``)
    latest.json                 written last, atomically: which checkpoint is complete, + hashes,
                                and the folders this run wrote that are kept (``history``)
    ckpt-0000200/model.safetensors   the decoder (spec, tokenizer, provenance in its metadata)
    ckpt-0000200/state.safetensors   optimizer, step, every RNG, the data sampler's position, the
                                     digest of the model file it belongs to and of the data
    log.jsonl                   one JSON record per log line

A sharded run (``--parallel fsdp``) writes ``ckpt-N/`` as ``core.sharded`` describes (each
process its own shards, then one process the state and the manifest); ``latest.json`` then
records the manifest's digest, and the manifest those of every other file.

A checkpoint is written into a new folder; only when all its files are on disk is ``latest.json``
replaced to point at it, and only then are folders beyond the last ``keep`` removed — only ones
this run wrote and listed in its history, never a folder it did not write. A process killed at
any moment therefore leaves ``latest.json`` naming a complete checkpoint (the new or the old
one). Nothing here is pickled: tensors go to safetensors, everything else to JSON.
"""

import json
import shutil
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from transformer_from_scratch.core import sharded
from transformer_from_scratch.core.checkpoint import describe, deserialise, save_decoder, serialise
from transformer_from_scratch.core.decoder import Decoder
from transformer_from_scratch.core.errors import CheckpointError
from transformer_from_scratch.core.files import sha256, sha256_file, write_atomically
from transformer_from_scratch.training.distributed import World

STATE_FORMAT = "transformer-from-scratch/training-state/1"
LATEST = "latest.json"


@attrs.frozen
class Saved:
    """A complete checkpoint in a run folder."""

    step: int
    model: Path  # model.safetensors, or a sharded checkpoint's manifest
    state: Path

    @property
    def sharded(self) -> bool:
        """Whether this checkpoint is sharded (see ``core.sharded``)."""
        return self.model.name == sharded.MANIFEST

    @property
    def folder(self) -> Path:
        """The checkpoint's folder."""
        return self.model.parent

    @classmethod
    def at(cls, folder: Path, step: int) -> "Saved":
        """The checkpoint in ``folder``, sharded or not."""
        manifest = folder / sharded.MANIFEST
        model = manifest if manifest.exists() else folder / "model.safetensors"
        return cls(step, model, folder / "state.safetensors")

    @property
    def files(self) -> tuple[Path, ...]:
        """The files ``latest.json`` vouches for (a manifest vouches for the rest)."""
        return (self.model,) if self.sharded else (self.model, self.state)


def _record(out: Path) -> dict[str, Any] | None:
    pointer = out / LATEST
    if not pointer.exists():
        return None
    try:
        record = json.loads(pointer.read_text())
        if not isinstance(record, dict):
            raise TypeError("not a JSON object")
        Path(record["folder"]), int(record["step"]), dict(record["sha256"])
        return record
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UnreadablePointer(
            f"{pointer} is unreadable ({type(err).__name__}: {err})",
            f"The checkpoint folders are untouched: `tfs train --out {out} --resume` continues "
            "from the newest intact one (and rewrites it)",
        ) from None


class UnreadablePointer(CheckpointError):
    """``latest.json`` cannot be read. ``reason`` says so without the advice, for a run that
    is already resuming (and so already following it)."""

    def __init__(self, reason: str, advice: str) -> None:
        super().__init__(f"{reason}. {advice}")
        self.reason = reason


def history(out: Path, field: str = "history") -> list[str]:
    """The checkpoint folders this run wrote and keeps, oldest first (``field="dropping"``: the
    ones it was removing when it last saved)."""
    record = _record(out)
    if record is None:
        return []
    kept = record.get(field, [record["folder"]] if field == "history" else [])
    return [name for name in kept if isinstance(name, str) and name.startswith("ckpt-")]


def checkpoint_folders(out: Path) -> list[Path]:
    """Every ``ckpt-*`` folder in ``out``, oldest first."""
    return sorted(p for p in out.glob("ckpt-*") if p.is_dir()) if out.is_dir() else []


def latest(out: Path) -> Saved | None:
    """The newest complete checkpoint in ``out``, checked against its recorded hashes."""
    record = _record(out)
    if record is None:
        return None
    saved = Saved.at(out / record["folder"], int(record["step"]))
    hashes = record["sha256"]
    pointer = out / LATEST
    for path in saved.files:
        if not path.exists() or sha256_file(path) != hashes.get(path.name):
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
    keep: int = 3,
) -> Saved:
    """Write a new checkpoint folder, point ``latest.json`` at it, then drop this run's folders
    beyond the newest ``keep``."""
    folder = _fresh_folder(out, step, sharded_save=False)
    model = save_decoder(decoder, folder / "model.safetensors", tokenizer=tokenizer,
                         extra={"step": str(step)})  # fmt: skip
    binding = {"step": str(step), "model_sha256": sha256(model.read_bytes())}
    state = write_atomically(folder / "state.safetensors", serialise(training_state, {
        "format": STATE_FORMAT, **info, **binding}))  # fmt: skip
    saved = Saved(step, model, state)
    _switch_latest(out, saved, keep)
    return saved


def _fresh_folder(out: Path, step: int, *, sharded_save: bool) -> Path:
    """The folder for step ``step``'s checkpoint, emptied of what an unfinished earlier save of
    that step left (never the checkpoint ``latest.json`` names)."""
    folder = out / f"ckpt-{step:07d}"
    if not folder.exists():
        return folder
    try:
        current = _record(out)
    except CheckpointError:
        current = None  # unreadable: recovery points it at an intact folder before any save
    if current is not None and current.get("folder") == folder.name:
        if sharded_save or (folder / sharded.MANIFEST).exists():
            raise CheckpointError(f"{folder} is the latest checkpoint; it is not overwritten")
        return folder  # the same step saved again, file by file, atomically
    shutil.rmtree(folder)
    return folder


def _switch_latest(out: Path, saved: Saved, keep: int) -> None:
    """Point ``latest.json`` at ``saved``, then drop this run's folders beyond ``keep``."""
    before = [*history(out, "dropping"), *history(out)]
    kept = [*(name for name in before if name != saved.folder.name), saved.folder.name][-keep:]
    dropping = [name for name in dict.fromkeys(before) if name not in kept]
    record = {
        "step": saved.step,
        "folder": saved.folder.name,
        "sha256": {p.name: sha256_file(p) for p in saved.files},
        "history": kept,
        "dropping": dropping,
    }
    write_atomically(out / LATEST, json.dumps(record, indent=2).encode())
    for name in dropping:
        shutil.rmtree(out / name, ignore_errors=True)


def save_sharded(out: Path, step: int, decoder: Decoder, optimizer: torch.optim.Optimizer,
                 tokenizer: dict[str, Any], training_state: dict[str, torch.Tensor],
                 info: dict[str, str], world: World, keep: int = 3) -> Saved:  # fmt: skip
    """Every process writes its shards of the weights and AdamW state; when all have finished,
    the first writes the rest of the state and the manifest, and only then switches
    ``latest.json``. A process killed on the way leaves ``latest.json`` as it was."""
    folder = out / f"ckpt-{step:07d}"
    if world.main:
        _fresh_folder(out, step, sharded_save=True)
    world.barrier()
    saved = Saved(step, folder / sharded.MANIFEST, folder / "state.safetensors")
    aliases = json.loads(describe(decoder, tokenizer)["aliases"])
    weights = {n: t for n, t in decoder.state_dict().items() if n not in aliases}
    sharded.write_shards(folder, "model", weights)
    moments, groups = optimizer_by_name(decoder, optimizer)
    sharded.write_shards(folder, "optimizer", moments)
    world.barrier()
    if world.main:
        metadata = {"format": STATE_FORMAT, **info, "optimizer": groups, "step": str(step)}
        write_atomically(saved.state, serialise(training_state, metadata))
        record = {**describe(decoder, tokenizer), "step": str(step),
                  "world_size": world.size}  # fmt: skip
        sharded.write_manifest(folder, record)
        _switch_latest(out, saved, keep)
    world.barrier()
    return saved


def point_at(out: Path, saved: Saved) -> None:
    """Rewrite ``latest.json`` to name ``saved`` (after recovering from an unreadable one)."""
    record = {
        "step": saved.step,
        "folder": saved.folder.name,
        "sha256": {p.name: sha256_file(p) for p in saved.files},
        "history": [saved.folder.name],
    }
    write_atomically(out / LATEST, json.dumps(record, indent=2).encode())


def check_pair(saved: Saved) -> dict[str, str]:
    """The state's metadata, after checking it belongs to ``saved.model`` at ``saved.step``."""
    if saved.sharded:
        sharded.read_manifest(saved.model)  # checks every file, the state's digest among them
    _, metadata = read_state(saved)
    recorded = None if saved.sharded else metadata.get("model_sha256")
    if recorded is not None and recorded != sha256(saved.model.read_bytes()):
        raise CheckpointError(
            f"{saved.state} belongs to another model file than {saved.model} (its recorded "
            "digest differs): was latest.json or a checkpoint folder edited by hand?"
        )
    if metadata.get("step") != str(saved.step):
        raise CheckpointError(
            f"{saved.state} is the state of step {metadata.get('step')}, but latest.json says "
            f"step {saved.step}: was latest.json edited by hand?"
        )
    return metadata


def recover(out: Path) -> Saved | None:
    """The newest checkpoint folder whose two files are intact and belong together."""
    for folder in reversed(checkpoint_folders(out)):
        try:
            saved = Saved.at(folder, int(folder.name.removeprefix("ckpt-")))
            if not saved.sharded:
                deserialise(saved.model.read_bytes(), str(saved.model))
            check_pair(saved)
        except (OSError, ValueError, CheckpointError):
            continue
        return saved
    return None


def remove_temporary_files(out: Path) -> list[Path]:
    """Delete what killed saves left behind (``.NAME.PID.tmp``); call with the run's lock held."""
    found = [*out.glob(".*.tmp"), *out.glob("ckpt-*/.*.tmp")] if out.is_dir() else []
    for path in found:
        path.unlink(missing_ok=True)
    return found


def read_state(saved: Saved) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The training-state tensors and metadata of a checkpoint."""
    return deserialise(saved.state.read_bytes(), str(saved.state), STATE_FORMAT)


MOMENTS = "optimizer."  # prefix of the optimizer's tensors in a single-file checkpoint's state


def saved_moments(
    decoder: nn.Module, tensors: dict[str, torch.Tensor], text: str
) -> dict[str, torch.Tensor]:
    """The optimizer's tensors of a single-file checkpoint, named ``PARAMETER.KEY``.

    Checkpoints name them by parameter (``optimizer.blocks.0.mlp.W_in.exp_avg``). Those written
    before (``optimizer.7.exp_avg``) numbered them in the order of the optimizer's groups then:
    every parameter of two or more dimensions, then the rest; that order is rebuilt here, so
    they resume under any grouping.
    """
    stored = {n[len(MOMENTS) :]: t for n, t in tensors.items() if n.startswith(MOMENTS)}
    if json.loads(text).get("by") == "name":
        return stored
    named = list(decoder.named_parameters())
    order = [n for n, p in named if p.dim() >= 2] + [n for n, p in named if p.dim() < 2]
    moments = {}
    for name, tensor in stored.items():
        index, key = name.split(".", 1)
        if not index.isdigit() or int(index) >= len(order):
            raise CheckpointError(f"the checkpoint's optimizer state has {name!r}, which this "
                                  "model has no parameter for")  # fmt: skip
        moments[f"{order[int(index)]}.{key}"] = tensor
    return moments


def optimizer_by_name(
    decoder: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], str]:
    """The optimizer's tensors named ``PARAMETER.KEY`` (shards, for sharded parameters), and
    its settings as JSON."""
    names = {id(p): n for n, p in decoder.named_parameters()}
    tensors = {f"{names[id(param)]}.{key}": value
               for param, entry in optimizer.state.items()
               for key, value in entry.items() if isinstance(value, torch.Tensor)}  # fmt: skip
    groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    return tensors, json.dumps({"by": "name", "param_groups": groups})


def restore_by_name(decoder: nn.Module, optimizer: torch.optim.Optimizer,
                    tensors: dict[str, torch.Tensor], text: str) -> None:  # fmt: skip
    """Load what :func:`optimizer_by_name` saved (the tensors already cut to this process's
    shards)."""
    order = [p for group in optimizer.param_groups for p in group["params"]]
    position = {id(p): i for i, p in enumerate(order)}  # by identity: == compares values
    index = {n: position[id(p)] for n, p in decoder.named_parameters()}
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        parameter, key = name.rsplit(".", 1)
        state.setdefault(index[parameter], {})[key] = tensor
    current = optimizer.state_dict()["param_groups"]
    saved = json.loads(text)["param_groups"]
    groups = [{**now, **{k: tuple(v) if k == "betas" else v for k, v in then.items()
                         if k != "params"}}  # which parameters: this run's grouping
              for now, then in zip(current, saved, strict=True)]  # fmt: skip
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def optimizer_template(decoder: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """Empty tensors to read the stored optimizer ``names`` into, cut like their parameters."""
    parameters = dict(decoder.named_parameters())
    template = {}
    for name in names:
        parameter, key = name.rsplit(".", 1)
        if parameter not in parameters:
            raise CheckpointError(f"the checkpoint's optimizer state names {parameter!r}, which "
                                  "this model does not have")  # fmt: skip
        like = parameters[parameter]
        template[name] = torch.zeros((), dtype=torch.float32) if key == "step" else (
            torch.zeros_like(like, dtype=torch.float32))  # fmt: skip
    return template
