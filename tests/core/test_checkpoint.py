"""Checkpoints: exact round trips, re-tied weights, and every damaged file refused by name."""

import errno
import json
import os
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import safetensors.torch
import torch

import transformer_from_scratch as tfs
from transformer_from_scratch.core.checkpoint import load_checkpoint, load_decoder, save_decoder
from transformer_from_scratch.core.registry import Provider

SpecMaker = Callable[..., tfs.DecoderSpec]


@pytest.fixture
def saved(tmp_path: Path, tiny_spec: SpecMaker) -> tuple[tfs.Decoder, Path]:
    decoder = tfs.build_decoder(tiny_spec()).eval()
    path = save_decoder(decoder, tmp_path / "model.safetensors", tokenizer={"name": "byte"})
    return decoder, path


def test_round_trip_reproduces_logits_exactly(saved: tuple[tfs.Decoder, Path]) -> None:
    decoder, path = saved
    checkpoint = load_checkpoint(path)
    tokens = torch.randint(0, 11, (2, 7))
    assert torch.equal(checkpoint.decoder(tokens), decoder(tokens))
    assert checkpoint.decoder.spec == decoder.spec
    assert checkpoint.tokenizer == {"name": "byte"}
    providers = json.loads(checkpoint.metadata["providers"])
    assert providers["mlp/gelu"]["distribution"] == "transformer-from-scratch"


def test_tied_weights_are_saved_once_and_re_tied(saved: tuple[tfs.Decoder, Path]) -> None:
    _, path = saved
    tensors = safetensors.torch.load_file(path)
    assert "embedding.weight" in tensors and "unembedding.weight" not in tensors
    decoder = load_decoder(path)
    assert decoder.unembedding.weight is decoder.embedding.weight


def test_a_zero_length_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    with pytest.raises(tfs.CheckpointError, match=r"is empty \(0 bytes\)"):
        load_decoder(path)


def test_a_truncated_file_is_refused(saved: tuple[tfs.Decoder, Path]) -> None:
    _, path = saved
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(
        tfs.CheckpointError, match=r"not a readable safetensors file \(truncated or corrupted\?\)"
    ):
        load_decoder(path)


def test_a_flipped_bit_in_the_weights_is_detected(saved: tuple[tfs.Decoder, Path]) -> None:
    _, path = saved
    blob = bytearray(path.read_bytes())
    blob[-7] ^= 0x10
    path.write_bytes(bytes(blob))
    with pytest.raises(tfs.CheckpointError, match="damaged or was edited"):
        load_decoder(path)


def test_edited_metadata_is_detected(saved: tuple[tfs.Decoder, Path]) -> None:
    _, path = saved
    tensors = safetensors.torch.load_file(path)
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        metadata = json.loads(handle.read(length))["__metadata__"]
    metadata["spec"] = metadata["spec"].replace('"n_layers": 2', '"n_layers": 1')
    safetensors.torch.save_file(tensors, path, metadata=metadata)
    with pytest.raises(tfs.CheckpointError, match="damaged or was edited"):
        load_decoder(path)


def _malicious_pickle(marker: Path) -> bytes:
    """A pickle that, if ever loaded, would write ``marker`` (built opcode by opcode)."""
    code = f"open({str(marker)!r}, 'w').write('pwned')".encode()
    # PROTO 2, GLOBAL builtins.exec, BINUNICODE code, TUPLE1, REDUCE, STOP
    return b"\x80\x02cbuiltins\nexec\nX" + len(code).to_bytes(4, "little") + code + b"\x85R."


def test_a_pickle_renamed_safetensors_is_refused_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "was_unpickled"
    path = tmp_path / "model.safetensors"
    path.write_bytes(_malicious_pickle(marker))
    with pytest.raises(
        tfs.CheckpointError, match=r"is a pickle .* refused: unpickling can run arbitrary code"
    ):
        load_decoder(path)
    assert not marker.exists()


def test_a_foreign_safetensors_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(2)}, path)
    with pytest.raises(
        tfs.CheckpointError, match="format None, expected 'transformer-from-scratch/checkpoint/1'"
    ):
        load_decoder(path)


def test_a_component_no_plugin_provides_names_kind_name_and_distribution(
    tmp_path: Path, tiny_spec: SpecMaker
) -> None:
    from tests.components.blocks import PlusOne

    class Plugged(PlusOne):
        def __init__(self, dims: tfs.Dims) -> None:
            super().__init__()

    registry = tfs.load_registry(autoload=False)
    extra = tfs.Registry(Provider("fancy", "tfs-fancy-mlp", "2.1"))
    extra.register("mlp", "fancy", Plugged)
    registry.merge(extra)
    path = save_decoder(
        tfs.build_decoder(tiny_spec(mlp="fancy"), registry), tmp_path / "m.safetensors"
    )
    with pytest.raises(
        tfs.CheckpointError,
        match=r"needs parts that are not installed now: mlp 'fancy' \(components\), provided by tfs-fancy-mlp 2.1 when it was saved; install it \(pip install tfs-fancy-mlp\)",
    ):
        load_decoder(path, tfs.load_registry(autoload=False))


@pytest.mark.parametrize("failure", [errno.ENOSPC, errno.EACCES])
def test_a_failed_save_keeps_the_old_file_and_leaves_no_temporary(
    saved: tuple[tfs.Decoder, Path], monkeypatch: pytest.MonkeyPatch, failure: int
) -> None:
    decoder, path = saved
    before = path.read_bytes()

    def broken_fsync(descriptor: int) -> None:
        raise OSError(failure, os.strerror(failure))

    monkeypatch.setattr(os, "fsync", broken_fsync)
    reason = "the disk is full" if failure == errno.ENOSPC else "permission denied"
    with pytest.raises(
        tfs.CheckpointError, match=f"could not save .*: {reason}; the previous file .* is untouched"
    ):
        save_decoder(decoder, path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["model.safetensors"]


def test_an_unwritable_folder_is_reported(saved: tuple[tfs.Decoder, Path], tmp_path: Path) -> None:
    decoder, _ = saved
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(tfs.CheckpointError, match="could not save"):
        save_decoder(decoder, blocker / "sub" / "model.safetensors")
