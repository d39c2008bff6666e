"""Checkpoints: one safetensors file holding a decoder's weights, its spec and provenance.

Nothing is ever unpickled. The file's metadata holds the format version, the spec (JSON), each
component's provider distribution and version, an optional tokenizer description, the names of
tied tensors (saved once, re-tied on load) and a SHA-256 digest of the tensor data plus metadata,
so a truncated, bit-flipped or edited file is refused instead of silently loaded. Rebuilding goes
through the registry, so a checkpoint can reach registered code and nothing else.
"""

import json
import re
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import safetensors.torch
import torch
from safetensors.torch import load as read_safetensors  # bytes -> tensors; never unpickles

from transformer_from_scratch.core.builder import build_decoder
from transformer_from_scratch.core.decoder import Decoder
from transformer_from_scratch.core.errors import CheckpointError, SpecError
from transformer_from_scratch.core.files import sha256, write_atomically
from transformer_from_scratch.core.plugins import default_registry
from transformer_from_scratch.core.registry import Registry
from transformer_from_scratch.core.sharded import is_sharded, read_manifest, read_shards
from transformer_from_scratch.core.spec import DecoderSpec

FORMAT = "transformer-from-scratch/checkpoint/1"
_PICKLE_STARTS = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")


@attrs.frozen
class Checkpoint:
    """A loaded checkpoint: the rebuilt decoder, the tokenizer description and all metadata."""

    decoder: Decoder
    tokenizer: dict[str, Any] | None
    metadata: dict[str, str]


def save_decoder(
    decoder: Decoder,
    path: str | Path,
    *,
    tokenizer: Mapping[str, Any] | None = None,
    extra: Mapping[str, str] | None = None,
) -> Path:
    """Save ``decoder`` to ``path`` atomically (see ``core.files``); returns the path."""
    tensors, aliases = unique_tensors(decoder.state_dict())
    metadata = {
        **(extra or {}),
        **describe(decoder, tokenizer),
        "format": FORMAT,
        "aliases": json.dumps(aliases, sort_keys=True),
    }
    return write_atomically(path, serialise(tensors, metadata))


def serialise(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """safetensors bytes whose metadata carries a digest of the data and the metadata."""
    plain = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    data = _data_section(safetensors.torch.save(plain))
    signed = {**metadata, "digest": _digest(data, metadata)}
    return safetensors.torch.save(plain, metadata=signed)


def deserialise(
    blob: bytes, source: str, expected_format: str = FORMAT
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata from safetensors bytes, refusing anything damaged or foreign."""
    if not blob:
        raise CheckpointError(
            f"{source} is empty (0 bytes): the save that wrote it was interrupted"
        )
    if blob.startswith(_PICKLE_STARTS):
        raise CheckpointError(
            f"{source} is a pickle (torch.save) file, not safetensors. It is refused: unpickling "
            "can run arbitrary code. Re-save the weights with safetensors"
        )
    _check_header_size(blob, source)
    try:
        tensors = read_safetensors(blob)
        metadata = _header(blob).get("__metadata__", {})
    except Exception as err:
        raise CheckpointError(
            f"{source} is not a readable safetensors file (truncated or corrupted?): {err}"
        ) from None
    _verify(blob, metadata, source, expected_format)
    return tensors, metadata


def load_checkpoint(path: str | Path, registry: Registry | None = None) -> Checkpoint:
    """Rebuild the decoder a checkpoint file (or sharded checkpoint folder) describes and load
    its weights."""
    path = Path(path)
    if is_sharded(path):
        return _load_sharded(path, registry)
    try:
        blob = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err.strerror or err}") from None
    tensors, metadata = deserialise(blob, str(path))
    aliases = _json_field(metadata, "aliases", path, {})
    tokenizer = _json_field(metadata, "tokenizer", path, None)
    registry = registry or default_registry()
    spec = _spec(metadata, path)
    _require_components(spec, metadata, registry, path)
    decoder = build_decoder(spec, registry)
    _load_state(decoder, tensors, aliases, path)
    return Checkpoint(decoder.eval(), tokenizer, metadata)


def _load_sharded(path: Path, registry: Registry | None) -> Checkpoint:
    """A sharded checkpoint, put together whole in this process."""
    record = read_manifest(path)
    folder = path if path.is_dir() else path.parent
    metadata = {k: v for k, v in record.items() if isinstance(v, str)}
    registry = registry or default_registry()
    spec = _spec(metadata, folder)
    _require_components(spec, metadata, registry, folder)
    decoder = build_decoder(spec, registry)
    aliases = _json_field(metadata, "aliases", folder, {})
    tensors = {n: t for n, t in decoder.state_dict().items() if n not in aliases}
    read_shards(folder, "model", tensors, alone=True)
    _load_state(decoder, tensors, aliases, folder)
    tokenizer = _json_field(metadata, "tokenizer", folder, None)
    return Checkpoint(decoder.eval(), tokenizer, metadata)


def tied_names(module: torch.nn.Module) -> dict[str, str]:
    """Each second (third, ...) name of a shared parameter or buffer -> its first name."""
    first: dict[int, str] = {}
    aliases = {}
    named = [*module.named_parameters(remove_duplicate=False),
             *module.named_buffers(remove_duplicate=False)]  # fmt: skip
    for name, tensor in named:
        if id(tensor) in first:
            aliases[name] = first[id(tensor)]
        else:
            first[id(tensor)] = name
    return aliases


def describe(decoder: Decoder, tokenizer: Mapping[str, Any] | None) -> dict[str, str]:
    """What a checkpoint says about its decoder besides the weights."""
    return {
        "spec": decoder.spec.to_json(),
        "providers": json.dumps(_providers(decoder), sort_keys=True),
        "aliases": json.dumps(tied_names(decoder), sort_keys=True),
        "tokenizer": json.dumps(dict(tokenizer) if tokenizer is not None else None),
    }


# A header this large is an attack or damage, not a checkpoint (safetensors' own limit).
MAX_HEADER = 100_000_000


def _check_header_size(blob: bytes, source: str) -> None:
    if len(blob) < 8:
        raise CheckpointError(f"{source} is {len(blob)} bytes long: too short for safetensors")
    (length,) = struct.unpack("<Q", blob[:8])
    if length > min(MAX_HEADER, len(blob) - 8):
        raise CheckpointError(
            f"{source} declares a header of {length:,} bytes, more than the file holds or "
            f"{MAX_HEADER:,}: it is damaged or not a checkpoint"
        )


def _json_field(metadata: Mapping[str, str], field: str, path: Path, default: Any) -> Any:
    """A JSON object from the metadata (or ``default`` when absent or null)."""
    text = metadata.get(field)
    if text is None:
        return default
    try:
        value = json.loads(text)
    except ValueError as err:
        raise CheckpointError(
            f"{path}: metadata field {field!r} is not valid JSON ({err})"
        ) from None
    if value is None:
        return default
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise CheckpointError(
            f"{path}: metadata field {field!r} should hold a JSON object, not "
            f"{type(value).__name__}"
        )
    return value


def load_decoder(path: str | Path, registry: Registry | None = None) -> Decoder:
    """The decoder saved in ``path`` (in eval mode)."""
    return load_checkpoint(path, registry).decoder


def unique_tensors(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Keep the first name of each shared tensor; map the other names to it (tied weights)."""
    kept: dict[str, torch.Tensor] = {}
    first_name: dict[tuple[int, int, tuple[int, ...]], str] = {}  # (storage, offset, shape)
    aliases: dict[str, str] = {}
    for name, tensor in state.items():
        storage = tensor.untyped_storage().data_ptr()
        key = (storage, int(tensor.storage_offset()), tuple(tensor.shape))
        if key in first_name:
            aliases[name] = first_name[key]
        else:
            first_name[key] = name
            kept[name] = tensor
    return kept, aliases


def _providers(decoder: Decoder) -> dict[str, dict[str, str]]:
    return {
        entry.id: {"distribution": entry.provider.distribution, "version": entry.provider.version}
        for entry, _ in decoder.parts
    }


def _listed(names: list[str], shown: int = 5) -> str:
    """The first few of ``names``, then "and N more"."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _header(blob: bytes) -> dict[str, Any]:
    (length,) = struct.unpack("<Q", blob[:8])
    header: dict[str, Any] = json.loads(blob[8 : 8 + length])
    return header


def _data_section(blob: bytes) -> bytes:
    (length,) = struct.unpack("<Q", blob[:8])
    return blob[8 + length :]


def _digest(data: bytes, metadata: Mapping[str, str]) -> str:
    unsigned = {k: v for k, v in metadata.items() if k != "digest"}
    return sha256(data + json.dumps(unsigned, sort_keys=True).encode())


def _verify(blob: bytes, metadata: Mapping[str, str], source: str, expected: str) -> None:
    if metadata.get("format") != expected:
        raise CheckpointError(
            f"{source} is a safetensors file but not what was expected here "
            f"(format {metadata.get('format')!r}, expected {expected!r})"
        )
    if metadata.get("digest") != _digest(_data_section(blob), metadata):
        raise CheckpointError(
            f"{source} is damaged or was edited: its contents do not match the digest recorded "
            "when it was saved (a flipped bit or a changed tensor). Use an earlier checkpoint"
        )


def _spec(metadata: Mapping[str, str], path: Path) -> DecoderSpec:
    try:
        return DecoderSpec.from_json(metadata["spec"], source=f"the spec inside {path}")
    except KeyError:
        raise CheckpointError(f"{path} holds no spec in its metadata") from None
    except SpecError as err:
        raise CheckpointError(str(err)) from None


def _require_components(
    spec: DecoderSpec, metadata: Mapping[str, str], registry: Registry, path: Path
) -> None:
    providers = _json_field(metadata, "providers", path, {})
    missing = []
    for where, components in spec.all_components():
        for kind, component in components.items():
            if component.name not in registry.names(kind):
                missing.append(_missing_part(where, kind, component.name, providers))
    if missing:
        raise CheckpointError(f"{path} needs parts that are not installed now: " + "; ".join(
            dict.fromkeys(missing)))  # fmt: skip


# PEP 508 distribution names: only such text is ever put into a command we suggest.
_DISTRIBUTION = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,98}[A-Za-z0-9])?$")


def _missing_part(where: str, kind: str, name: str, providers: Mapping[str, Any]) -> str:
    saved = providers.get(f"{kind}/{name}", {})
    saved = saved if isinstance(saved, dict) else {}
    dist, version = str(saved.get("distribution", "")), str(saved.get("version", ""))
    if not _DISTRIBUTION.match(dist):
        return (
            f"{kind} {name!r} ({where}), from a distribution the checkpoint does not name validly; "
            "install the plugin that provides it"
        )
    shown_version = version if re.fullmatch(r"[A-Za-z0-9.+!_-]{1,64}", version) else ""
    return (
        f"{kind} {name!r} ({where}), provided by {dist} {shown_version} when it was saved; install "
        f"it (pip install {dist})"
    ).replace("  ", " ")


def _load_state(
    decoder: Decoder, tensors: dict[str, torch.Tensor], aliases: Mapping[str, str], path: Path
) -> None:
    expected = decoder.state_dict()
    missing = sorted(set(expected) - set(tensors) - set(aliases))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [
        f"{name} is {tuple(t.shape)} {t.dtype}, the model needs "
        f"{tuple(expected[name].shape)} {expected[name].dtype}"
        for name, t in sorted(tensors.items())
        if name in expected and (t.shape != expected[name].shape or t.dtype != expected[name].dtype)
    ]
    problems = [f"missing {_listed(missing)}"] if missing else []
    problems += [f"unexpected {_listed(unexpected)}"] if unexpected else []
    problems += [_listed(wrong)] if wrong else []
    if problems:
        raise CheckpointError(
            f"{path} does not fit the model its own spec builds ({'; '.join(problems)}); was the "
            "implementation changed since it was saved?"
        )
    strays = sorted(
        f"{a} -> {t}" for a, t in aliases.items() if a not in expected or t not in tensors
    )
    if strays:
        raise CheckpointError(f"{path}: metadata field 'aliases' names tensors it lacks: "
                              f"{_listed(strays)}")  # fmt: skip
    bad = [
        n for n, t in sorted(tensors.items()) if t.is_floating_point() and not t.isfinite().all()
    ]
    if bad:
        raise CheckpointError(f"{path} holds NaN or infinite weights in {_listed(bad)}")
    decoder.load_state_dict(tensors, strict=False)
    state = decoder.state_dict()
    for alias, target in aliases.items():
        if state[alias].data_ptr() != state[target].data_ptr():
            raise CheckpointError(
                f"{path} saved {alias} as a tie to {target}, but the rebuilt model keeps them "
                "apart; the unembedding implementation no longer ties its weight"
            )
