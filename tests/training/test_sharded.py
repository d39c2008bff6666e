"""Sharded training (FSDP2) and sharded checkpoints, run as users run them: torchrun, gloo
processes on the CPU, real run folders."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from transformer_from_scratch.core.checkpoint import load_checkpoint
from transformer_from_scratch.core.errors import CheckpointError
from transformer_from_scratch.training import state as run_folder

# One worker runs them all (pytest -n): they share one 2-process run, and each starts processes.
pytestmark = [pytest.mark.skipif(sys.platform == "win32", reason="gloo over localhost"),
              pytest.mark.xdist_group("sharded")]  # fmt: skip

TFS = shutil.which("tfs") or str(Path(sys.executable).parent / "tfs")
WORKER = Path(__file__).with_name("sharded_worker.py")
TEXT = "the quick brown fox jumps over the lazy dog. " * 60
RUN = ["--spec", "tiny", "--tokenizer", "char", "--batch-size", "8", "--context", "16", "--warmup",
       "3", "--eval-every", "5", "--eval-batches", "2", "--log-every", "1", "--checkpoint-every",
       "4", "--sample-tokens", "0", "--device", "cpu", "--quiet"]  # fmt: skip


def launch(processes: int, *command: str, cwd: Path,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``command`` under torchrun with ``processes`` processes (0: plainly, no torchrun)."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                str(processes)]  # fmt: skip
    prefix = torchrun if processes else []
    return subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env=env)  # fmt: skip


def train(processes: int, out: Path, *options: str) -> None:
    result = launch(processes, TFS, "train", *RUN, "--data", str(out.parent / "text.txt"),
                    "--out", str(out), *options, cwd=out.parent)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]


def losses(out: Path) -> list[float]:
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "text.txt").write_text(TEXT)
    return tmp_path


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-process fsdp run of 20 steps, keeping its checkpoints at 12, 16 and 20."""
    base = tmp_path_factory.mktemp("sharded")
    (base / "text.txt").write_text(TEXT)
    train(2, base / "run", "--steps", "20", "--parallel", "fsdp")
    return base / "run"


def test_fsdp_follows_one_process_and_resumes_on_another_number_of_processes(
    folder: Path, sharded_run: Path
) -> None:
    train(0, folder / "one", "--steps", "20")
    one, two = losses(folder / "one"), losses(sharded_run)
    assert len(one) == len(two) == 20
    assert two == pytest.approx(one, rel=1e-4)  # the same global batch, summed in another order
    assert (sharded_run / "ckpt-0000020" / "checkpoint.json").exists()

    train(2, folder / "part", "--steps", "20", "--stop-after", "10", "--parallel", "fsdp")
    shutil.copytree(folder / "part", folder / "part1")
    train(2, folder / "part", "--resume")  # the same two processes: exact resume
    assert losses(folder / "part") == two
    train(0, folder / "part1", "--resume", "--parallel", "ddp")  # one unsharded process
    resumed = losses(folder / "part1")
    assert resumed[:10] == two[:10]
    # Not bit for bit: one process sums the gradient of the whole batch in one order, two sum
    # halves and then average them, so the last bits differ (measured: below 1e-6 relative).
    assert resumed[10:] == pytest.approx(two[10:], rel=1e-5)


def test_a_single_file_checkpoint_starts_a_sharded_run(folder: Path) -> None:
    train(0, folder / "one", "--steps", "12")
    train(0, folder / "part", "--steps", "12", "--stop-after", "6")
    before = run_folder.latest(folder / "part")
    assert before is not None and not before.sharded
    # each process's 4 sequences in 2 passes, their gradients reduced after the second only
    train(2, folder / "part", "--resume", "--parallel", "fsdp", "--accumulate", "2")
    saved = run_folder.latest(folder / "part")
    assert saved is not None and saved.sharded and saved.step == 12
    assert losses(folder / "part") == pytest.approx(losses(folder / "one"), rel=1e-5)


def test_a_checkpoint_saved_by_two_processes_reads_bit_for_bit_into_one_and_into_three(
    tmp_path: Path,
) -> None:
    saved = launch(2, str(WORKER), "save", str(tmp_path / "run"), cwd=tmp_path)
    assert saved.returncode == 0, saved.stderr[-3000:]
    for processes in (1, 3):  # three: shards of unequal size, cut differently from the saved
        loaded = launch(processes, str(WORKER), "load", str(tmp_path / "run"), cwd=tmp_path)
        assert loaded.returncode == 0, loaded.stderr[-3000:]
        assert f"identical on {processes} processes" in loaded.stdout


KILL = """
import os, signal
from torch.distributed.checkpoint import hf_storage
original = hf_storage.HuggingFaceStorageWriter.write_data
calls = []
def write_data(self, plan, planner):
    calls.append(plan)
    if os.environ.get("RANK") == "1" and len(calls) == int(os.environ["KILL_AT_WRITE"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, plan, planner)
hf_storage.HuggingFaceStorageWriter.write_data = write_data
"""


@pytest.mark.parametrize("write", [pytest.param(3, marks=pytest.mark.slow), 4],
                         ids=["before-its-weights", "before-its-moments"])  # fmt: skip
def test_killing_a_process_during_a_sharded_save_keeps_the_previous_checkpoint(
    folder: Path, write: int
) -> None:
    inject = folder / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(textwrap.dedent(KILL))
    env = {**os.environ, "PYTHONPATH": str(inject), "KILL_AT_WRITE": str(write)}
    out = folder / "run"
    killed = launch(2, TFS, "train", *RUN, "--data", str(folder / "text.txt"), "--steps", "12",
                    "--parallel", "fsdp", "--out", str(out), cwd=folder, env=env)  # fmt: skip
    assert killed.returncode != 0
    saved = run_folder.latest(out)  # each save writes twice (weights, moments): 3 is step 8's
    assert saved is not None and saved.step == 4 and saved.sharded
    assert load_checkpoint(saved.model).decoder is not None
    assert not (out / "ckpt-0000008" / "checkpoint.json").exists()
    train(2, out, "--resume")
    finished = run_folder.latest(out)
    assert finished is not None and finished.step == 12
    assert len(losses(out)) == 12


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


CORRUPTIONS = {
    "a flipped bit in a weight shard": (
        lambda c: _flip(c / "model" / "shard-00002-model-00001-of-00001.safetensors"),
        "shard-00002-model-00001-of-00001.safetensors is damaged or was replaced",
    ),
    "a truncated moment shard": (
        lambda c: (p := c / "optimizer" / "shard-00001-model-00001-of-00001.safetensors")
        .write_bytes(p.read_bytes()[:100]),
        "optimizer/shard-00001-model-00001-of-00001.safetensors is damaged",
    ),
    "a missing shard": (
        lambda c: (c / "model" / "shard-00001-model-00001-of-00001.safetensors").unlink(),
        "is missing: the sharded checkpoint is incomplete",
    ),
    "a stray shard": (
        lambda c: shutil.copy(c / "model" / "shard-00001-model-00001-of-00001.safetensors",
                              c / "model" / "shard-00003-model-00001-of-00001.safetensors"),
        "holds files its manifest does not list (model/shard-00003",
    ),
    "a pickle in place of a shard": (
        lambda c: (c / "model" / "shard-00001-model-00001-of-00001.safetensors")
        .write_bytes(b"\x80\x04K\x01."),
        "is damaged or was replaced",
    ),
    "an edited manifest": (
        lambda c: (c / "checkpoint.json").write_text(
            (c / "checkpoint.json").read_text().replace('"step": "20"', '"step": "21"')),
        "checkpoint.json was edited or damaged",
    ),
    "a manifest cut short": (
        lambda c: (c / "checkpoint.json").write_text((c / "checkpoint.json").read_text()[:50]),
        "checkpoint.json is unreadable",
    ),
}  # fmt: skip


def test_a_damaged_sharded_checkpoint_is_refused_naming_the_file(
    sharded_run: Path, tmp_path: Path
) -> None:
    for index, (what, (damage, message)) in enumerate(CORRUPTIONS.items()):
        copy = tmp_path / f"run{index}"
        shutil.copytree(sharded_run, copy)
        damage(copy / "ckpt-0000020")
        with pytest.raises(CheckpointError, match=message.replace("(", r"\(")):
            load_checkpoint(copy / "ckpt-0000020")
        recovered = run_folder.recover(copy)  # what --resume falls back to
        assert recovered is not None and recovered.step == 16, what


def test_a_sharded_run_is_read_whole_by_generate_and_export(
    sharded_run: Path, tmp_path: Path
) -> None:
    whole = load_checkpoint(sharded_run / "ckpt-0000020").decoder.state_dict()
    out = tmp_path / "model.safetensors"
    exported = launch(0, TFS, "export", str(sharded_run), "--out", str(out), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert "wrote" in exported.stdout and str(out) in exported.stdout
    single = load_checkpoint(out)
    assert single.tokenizer is not None and single.tokenizer["name"] == "char"
    assert all(t.equal(single.decoder.state_dict()[n]) for n, t in whole.items())
    again = launch(0, TFS, "export", str(sharded_run), "--out", str(out), cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr  # never overwritten
    for source in (sharded_run, out):
        generated = launch(0, TFS, "generate", "--checkpoint", str(source), "--prompt", "the",
                           "--max-new-tokens", "12", "--seed", "3", cwd=tmp_path)  # fmt: skip
        assert generated.returncode == 0, generated.stderr
        assert generated.stderr == ""
    assert generated.stdout.startswith("the")
