"""Run under torchrun by ``test_sharded.py``: ``save RUN`` (2 processes) trains a few steps
sharded, saves a sharded checkpoint and writes the whole tensors the processes held to
``RUN/truth.safetensors``; ``load RUN`` (any number) reads the checkpoint into a model sharded
its own way and checks every weight and AdamW moment against the truth, bit for bit."""

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from transformer_from_scratch.core import sharded
from transformer_from_scratch.core.builder import build_decoder
from transformer_from_scratch.core.checkpoint import load_checkpoint, tied_names
from transformer_from_scratch.core.decoder import Decoder
from transformer_from_scratch.core.spec import DecoderSpec
from transformer_from_scratch.training import state as run_folder
from transformer_from_scratch.training.distributed import join, leave
from transformer_from_scratch.training.sharding import build_sharded, local, whole

torch.set_num_threads(1)
SPEC = DecoderSpec.preset("tiny").evolve(d_vocab=257)  # 257 rows: shards of unequal size


def make(seed: int) -> tuple[Decoder, torch.optim.Optimizer]:
    decoder = build_sharded(SPEC, seed, torch.device("cpu"))
    return decoder, torch.optim.AdamW(decoder.parameters(), lr=1e-2)


def everything(
    decoder: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, torch.Tensor]:
    """Every weight and moment, whole (every process must call it)."""
    tensors = {n: whole(t) for n, t in decoder.state_dict().items()
               if n not in tied_names(decoder)}  # fmt: skip
    moments, _ = run_folder.optimizer_by_name(decoder, optimizer)
    return {**tensors, **{f"optimizer/{n}": whole(t) for n, t in moments.items()}}


def check_meta_build(decoder: torch.nn.Module) -> None:
    """Each process's shards are the same numbers as an unsharded build with the same seed."""
    torch.manual_seed(7)
    plain = build_decoder(SPEC).state_dict()
    rank, size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    for name, tensor in decoder.state_dict().items():
        full = plain[name]
        chunks = torch.chunk(full, size) if full.dim() else (full,) * size  # FSDP2's cut
        expected = chunks[rank] if rank < len(chunks) else full[:0]
        assert torch.equal(local(tensor), expected), f"meta build differs at {name}"


def save(run: Path) -> None:
    world = join(torch.device("cpu"), group=True)
    decoder, optimizer = make(seed=7)
    check_meta_build(decoder)
    torch.manual_seed(1)
    for _ in range(3):
        tokens = torch.randint(0, SPEC.d_vocab, (2, 9))
        logits = decoder(tokens[:, :-1])
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()
        optimizer.step()
        optimizer.zero_grad()
    run_folder.save_sharded(run, 3, decoder, optimizer, {"kind": "byte"},
                            {"rng.torch": torch.get_rng_state()}, {}, world)  # fmt: skip
    truth = everything(decoder, optimizer)
    if world.main:
        save_file({n: t.contiguous() for n, t in truth.items()}, str(run / "truth.safetensors"))
    leave(world)


def load(run: Path) -> None:
    world = join(torch.device("cpu"), group=True)
    decoder, optimizer = make(seed=99)  # other numbers everywhere until the checkpoint is read
    saved = run_folder.latest(run)
    assert saved is not None and saved.sharded
    weights = {n: t for n, t in decoder.state_dict().items() if n not in tied_names(decoder)}
    sharded.read_shards(saved.folder, "model", weights)
    decoder.load_state_dict(weights, strict=False)
    names = sharded.stored_names(saved.folder, "optimizer")
    moments = run_folder.optimizer_template(decoder, names)
    sharded.read_shards(saved.folder, "optimizer", moments)
    _, metadata = run_folder.read_state(saved)
    run_folder.restore_by_name(decoder, optimizer, moments, metadata["optimizer"])
    got = everything(decoder, optimizer)
    if world.main:
        truth = load_file(str(run / "truth.safetensors"))
        assert sorted(got) == sorted(truth), sorted(set(got) ^ set(truth))
        different = [n for n in truth if not torch.equal(got[n], truth[n])]
        assert not different, f"differ after resharding: {different}"
        alone = load_checkpoint(saved.model).decoder.state_dict()
        assert all(torch.equal(alone[n], truth[n]) for n in alone if n in truth)
        print(f"identical on {world.size} processes: {len(truth)} tensors")
    leave(world)


if __name__ == "__main__":
    {"save": save, "load": load}[sys.argv[1]](Path(sys.argv[2]))
