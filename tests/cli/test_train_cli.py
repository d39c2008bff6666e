"""``tfs train`` and ``tfs generate`` run as a user runs them, including under torchrun."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import Tfs

TEXT = "to be or not to be, that is the question. " * 80
SMALL = ["--spec", "tiny", "--steps", "8", "--batch-size", "4", "--context", "16", "--eval-every", "4",
         "--eval-batches", "2", "--log-every", "1", "--sample-tokens", "20"]  # fmt: skip


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "play.txt"
    path.write_text(TEXT)
    return path


def test_train_prints_loss_checkpoint_and_sample_then_generate_uses_it(
    tfs_cli: Tfs, data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = tfs_cli(
        "train",
        *SMALL,
        "--data",
        str(data),
        "--tokenizer",
        "char",
        "--out",
        str(out),
        "--sample-prompt",
        "to be",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("validation loss ") and "after 8 steps" in lines[0]
    assert lines[1] == f"checkpoint: {out / 'ckpt-0000008' / 'model.safetensors'}"
    assert lines[2] == "sample:"
    assert "step 4: validation loss" in result.stderr
    assert "one process, 1 torch thread (" in result.stderr  # (OMP_NUM_THREADS=1 here)
    assert (out / "log.jsonl").exists()
    generated = tfs_cli(
        "generate",
        "--checkpoint",
        str(out),
        "--prompt",
        "to be",
        "--max-new-tokens",
        "10",
        "--seed",
        "1",
    )
    assert generated.returncode == 0, generated.stderr
    assert generated.stdout.startswith("to be") and len(generated.stdout.rstrip("\n")) >= len(
        "to be"
    )


def test_a_prompt_with_characters_the_tokenizer_lacks_is_named(
    tfs_cli: Tfs, data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    assert (
        tfs_cli(
            "train", *SMALL, "--data", str(data), "--tokenizer", "char", "--out", str(out)
        ).returncode
        == 0
    )
    result = tfs_cli("generate", "--checkpoint", str(out), "--prompt", "Zebra!")
    assert result.returncode == 2
    assert "character(s) the char tokenizer never saw in training: '!Z'" in result.stderr


def test_a_long_prompt_is_cut_from_the_left_and_the_user_is_told(
    tfs_cli: Tfs, data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    assert tfs_cli("train", *SMALL, "--data", str(data), "--out", str(out)).returncode == 0
    result = tfs_cli(
        "generate", "--checkpoint", str(out), "--prompt", "x" * 100, "--max-new-tokens", "3"
    )
    assert result.returncode == 0, result.stderr
    assert (
        "the prompt was 37 tokens too long for the context window; its first 37 tokens were dropped"
        in result.stderr
    )
    assert result.stdout.startswith("…" + "x" * 63) and not result.stdout.startswith("…" + "x" * 64)


def test_train_reports_bad_input_in_one_line(tfs_cli: Tfs, tmp_path: Path) -> None:
    result = tfs_cli(
        "train", *SMALL, "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "run")
    )
    assert result.returncode == 2
    assert result.stderr.strip().endswith("no such file or folder")
    assert "Traceback" not in result.stderr


def test_generate_refuses_a_pickle(tfs_cli: Tfs, tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x80\x04\x95" + b"\x00" * 20)
    result = tfs_cli("generate", "--checkpoint", str(path))
    assert result.returncode == 2
    assert "is a pickle (torch.save) file" in result.stderr


def _losses(out: Path) -> list[float]:
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


@pytest.mark.skipif(sys.platform == "win32", reason="gloo over localhost")
def test_two_processes_with_gloo_follow_the_single_process_loss_curve(
    tfs_cli: Tfs, data: Path, tmp_path: Path
) -> None:
    args = [
        *SMALL,
        "--data",
        str(data),
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--sample-tokens",
        "0",
    ]
    single = tfs_cli("train", *args, "--out", str(tmp_path / "one"))
    assert single.returncode == 0, single.stderr
    script = shutil.which("tfs") or str(Path(sys.executable).parent / "tfs")
    # each process's 4 sequences in 2 passes (gradients averaged over processes after the second)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", script,
              "train", *args, "--accumulate", "2", "--out", str(tmp_path / "two")]  # fmt: skip
    double = subprocess.run(launch, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert double.returncode == 0, double.stderr[-3000:]
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) == 8
    assert two == pytest.approx(one, rel=1e-4)


def test_resume_remembers_the_run_and_says_what_changed(
    tfs_cli: Tfs, data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    first = tfs_cli("train", "--data", str(data), "--tokenizer", "char", *SMALL, "--lr", "0.002",
                    "--quiet", "--sample-tokens", "0", "--out", str(out))  # fmt: skip
    assert first.returncode == 0, first.stderr
    again = tfs_cli("train", "--out", str(out), "--resume", "--sample-tokens", "0")
    assert again.returncode == 0, again.stderr
    assert "after 8 steps" in again.stdout  # the run's own --steps 8, not the default 1200
    longer = tfs_cli("train", "--out", str(out), "--resume", "--steps", "12", "--quiet")
    assert longer.returncode == 0, longer.stderr
    assert "resume: --steps 12 (was 8)" in longer.stderr
    assert "the learning-rate schedule now ends at step 12" in longer.stderr
    assert "after 12 steps" in longer.stdout
    refused = tfs_cli("train", "--out", str(out), "--resume", "--tokenizer", "byte")
    assert refused.returncode == 2
    assert "--tokenizer 'byte' (the run has 'char')" in refused.stderr
    other = tfs_cli("train", "--out", str(out), "--resume", "--spec", "small", "--steps", "16")
    assert other.returncode != 0
    assert "--resume refused: the spec differs" in other.stderr
    assert "resume:" not in other.stderr  # nothing told of changes to a run it did not take


def test_an_out_that_is_a_file_is_refused_by_name(tfs_cli: Tfs, data: Path, tmp_path: Path) -> None:
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    for out in (taken, taken / "run"):
        done = tfs_cli("train", "--data", str(data), *SMALL, "--out", str(out))
        assert done.returncode != 0
        assert f"{taken} is a file; choose another --out" in done.stderr
        assert "Errno" not in done.stderr
    assert taken.read_text() == "mine"


def _torchrun(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = shutil.which("tfs") or str(Path(sys.executable).parent / "tfs")
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
              "2", script, "train", *args]  # fmt: skip
    done = subprocess.run(launch, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="gloo over localhost, POSIX signals, /proc")
def test_sigterm_to_torchrun_saves_one_step_in_every_process_and_the_run_resumes(
    data: Path, tmp_path: Path
) -> None:
    """SIGTERM sent to torchrun and to each of its processes, as a scheduler sends it: each
    process gets it more than once (directly, and forwarded by torchrun) and counts it once
    (a second signal more than two seconds later would stop it at once); they agree
    on one step, save it together, and say so once; the run then resumes."""
    import signal
    import time

    out = tmp_path / "run"
    script = shutil.which("tfs") or str(Path(sys.executable).parent / "tfs")
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
              "2", script, "train", "--spec", "tiny", "--data", str(data), "--steps", "100000",
              "--batch-size", "4", "--context", "16", "--log-every", "1", "--eval-every",
              "100000", "--checkpoint-every", "100000", "--sample-tokens", "0", "--device",
              "cpu", "--threads", "1", "--quiet", "--out", str(out)]  # fmt: skip
    child = subprocess.Popen(launch, cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, )  # fmt: skip
    log, deadline = out / "log.jsonl", time.monotonic() + 120
    while not (log.exists() and len(log.read_text().splitlines()) >= 5):
        assert time.monotonic() < deadline and child.poll() is None
        time.sleep(0.05)
    workers = _children(child.pid)
    assert len(workers) == 2
    for pid in workers:  # as a scheduler signals every process (twice here, to be sure) ...
        os.kill(pid, signal.SIGTERM)
        os.kill(pid, signal.SIGTERM)
    os.kill(child.pid, signal.SIGTERM)  # ... and torchrun, which forwards it once more
    _, stderr = child.communicate(timeout=120)
    saved = json.loads((out / "latest.json").read_text())["step"]
    assert saved >= 5
    told = f"terminated (SIGTERM) at step {saved} of 100000"
    assert stderr.count(told) == 1, stderr[-3000:]
    _torchrun(tmp_path, "--out", str(out), "--resume", "--steps", str(saved + 2))
    assert json.loads((out / "latest.json").read_text())["step"] == saved + 2


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (read from /proc)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines()
                          if ":\t" in line)  # fmt: skip
        except OSError:
            continue
        if int(fields.get("PPid", "0")) == pid:
            found.append(int(status.parent.name))
    return found


@pytest.mark.skipif(sys.platform == "win32", reason="gloo over localhost")
def test_each_process_draws_its_own_dropout_masks_and_resumes_them_exactly(
    data: Path, tmp_path: Path
) -> None:
    """Under torchrun every process has its own random stream (as nanoGPT seeds each rank);
    the checkpoint keeps each process's, so a stopped run resumes bit for bit."""
    from safetensors.torch import load_file

    from transformer_from_scratch import DecoderSpec

    spec = tmp_path / "dropout.toml"
    spec.write_text(DecoderSpec.preset("tiny").evolve(dropout=0.3).to_toml())
    args = ["--spec", str(spec), "--data", str(data), "--steps", "6", "--batch-size", "4",
            "--context", "16", "--log-every", "1", "--eval-every", "100", "--sample-tokens", "0",
            "--device", "cpu", "--threads", "1"]  # fmt: skip
    _torchrun(tmp_path, *args, "--out", str(tmp_path / "straight"))
    _torchrun(tmp_path, *args, "--stop-after", "3", "--out", str(tmp_path / "split"))
    _torchrun(tmp_path, "--out", str(tmp_path / "split"), "--resume")
    assert _losses(tmp_path / "split") == _losses(tmp_path / "straight")
    assert len(_losses(tmp_path / "straight")) == 6
    (state,) = sorted((tmp_path / "straight").glob("**/ckpt-*6/state.safetensors"))
    streams = load_file(state)["rng.torch.per_process"]
    assert streams.shape[0] == 2 and not torch.equal(streams[0], streams[1])
