"""A run folder never loses work: faults injected through a real test plugin and real processes.

Each test fails on the code before issue 10: NaN gradients saved as "last good", diverged weights
kept, the only checkpoint deleted, two writers in one folder, state paired with the wrong model.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import transformer_from_scratch as tfs
from tests.conftest import DistMaker, Tfs
from tests.training.conftest import TEXT, tiny_run
from transformer_from_scratch.core.checkpoint import load_decoder
from transformer_from_scratch.core.files import sha256
from transformer_from_scratch.training import state as run_folder
from transformer_from_scratch.training.config import TrainConfig
from transformer_from_scratch.training.health import SpikeDetector
from transformer_from_scratch.training.loop import read_log, train

# MLPs that misbehave after a number of training-mode forward passes (``after``).
FAULTS = """
import torch
from torch import nn
from transformer_from_scratch import hookimpl


class _Counted(nn.Module):
    def __init__(self, dims, after: int = 5):
        super().__init__()
        self.w = nn.Parameter(0.1 * torch.randn(dims.d_model, dims.d_model))
        self.after, self.calls = after, 0

    def forward(self, residual):
        if self.training:
            self.calls += 1
        return self.misbehave(residual @ self.w, self.calls > self.after)


class _NaNGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


class NaNGradients(_Counted):
    '''Finite outputs, NaN gradients once past `after`.'''
    def misbehave(self, out, now):
        return _NaNGradient.apply(out) if now else out


class Diverges(_Counted):
    '''Its weight jumps to 1e8 once past `after` (finite, harmless to the loss: unused).'''
    def __init__(self, dims, after: int = 5):
        super().__init__(dims, after)
        self.unused = nn.Parameter(torch.ones(3))
    def misbehave(self, out, now):
        if now:
            with torch.no_grad():
                self.unused.fill_(1e8)
        return out + 0 * self.unused.mean()


class Spikes(nn.Module):
    '''An unembedding whose logits, once, just past `after` calls, are scaled up 100 times.'''
    def __init__(self, dims, embedding, after: int = 5):
        super().__init__()
        self.w = nn.Parameter(0.1 * torch.randn(dims.d_model, dims.d_vocab))
        self.after, self.calls = after, 0

    def forward(self, residual):
        self.calls += self.training
        logits = residual @ self.w
        return logits * 100 if self.calls == self.after + 1 else logits


@hookimpl
def register_components(registry):
    registry.register("mlp", "nan_gradients", NaNGradients)
    registry.register("mlp", "diverges", Diverges)
    registry.register("unembedding", "spikes", Spikes)
"""


def config(data: Path, out: Path, **changes: Any) -> TrainConfig:
    return tiny_run(data, out, **{"log_every": 1, **changes})


def faulty_spec(
    make_distribution: DistMaker, tmp_path: Path, name: str, after: int, kind: str = "mlp"
) -> str:
    make_distribution("tfs-faults", {"tfs_faults": FAULTS}, {"faults": "tfs_faults"})
    part = {"name": name, "options": {"after": after}}
    spec = tfs.DecoderSpec.preset("tiny").evolve(**{kind: part})
    path = tmp_path / f"{name}.json"
    path.write_text(spec.to_json())
    return str(path)


def last_good_is_finite(out: Path, step: int) -> None:
    saved = run_folder.latest(out)
    assert saved is not None and saved.step == step
    for name, tensor in load_decoder(saved.model).state_dict().items():
        assert torch.isfinite(tensor).all() and tensor.abs().max() < 1e6, name
    tensors, _ = run_folder.read_state(saved)
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


def test_nan_gradients_with_a_finite_loss_never_reach_a_checkpoint(
    data: Path, tmp_path: Path, make_distribution: DistMaker
) -> None:
    out = tmp_path / "run"
    spec = faulty_spec(make_distribution, tmp_path, "nan_gradients", after=7)
    with pytest.raises(tfs.TfsError, match=r"gradients became nan at step 8 \(the loss was \d"):
        train(config(data, out, spec=spec))
    last_good_is_finite(out, 5)
    assert "ckpt-0000005" in str(run_folder.latest(out).model)


def test_diverged_weights_are_not_saved_as_good(
    data: Path, tmp_path: Path, make_distribution: DistMaker
) -> None:
    out = tmp_path / "run"
    spec = faulty_spec(make_distribution, tmp_path, "diverges", after=7)
    with pytest.raises(
        tfs.TfsError, match=r"not saving a checkpoint at step 10: .*grown to 1e\+08"
    ):
        train(config(data, out, spec=spec))
    last_good_is_finite(out, 5)


def test_a_loss_spike_is_logged_and_can_stop_the_run(
    data: Path, tmp_path: Path, make_distribution: DistMaker
) -> None:
    out = tmp_path / "run"
    spec = faulty_spec(make_distribution, tmp_path, "spikes", after=60, kind="unembedding")
    with pytest.raises(tfs.TfsError, match=r"loss spike at step 61: .* \(--stop-on-spike\)"):
        train(config(data, out, spec=spec, steps=80, checkpoint_every=20, lr=1e-3,
                     stop_on_spike=True))  # fmt: skip
    spikes = [r for r in read_log(out / "log.jsonl") if "spike" in r]
    assert [r["step"] for r in spikes] == [61]
    assert run_folder.latest(out).step == 60


def test_the_spike_detector_waits_for_a_window_then_flags_outliers() -> None:
    detector = SpikeDetector(sigmas=6, window=10)
    losses = [2.0 + 0.01 * (i % 3) for i in range(10)]
    assert all(detector.observe(i, x) is None for i, x in enumerate(losses))
    assert detector.observe(10, 2.02) is None
    spike = detector.observe(11, 5.0)
    assert spike is not None and spike.step == 11 and "loss spike at step 11" in str(spike)


def test_generation_reads_a_run_folder_or_any_one_of_its_checkpoint_folders(
    data: Path, tmp_path: Path
) -> None:
    from transformer_from_scratch.generation.loading import load_for_generation

    out = tmp_path / "run"
    train(config(data, out, steps=10, checkpoint_every=5))
    latest, _ = load_for_generation(out)
    earlier, _ = load_for_generation(out / "ckpt-0000005")
    for decoder, step in ((latest, 10), (earlier, 5)):
        saved = load_decoder(out / f"ckpt-{step:07d}" / "model.safetensors")
        assert all(torch.equal(a, b) for a, b in
                   zip(decoder.state_dict().values(), saved.state_dict().values(), strict=True))  # fmt: skip
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(tfs.CheckpointError, match=r"neither latest\.json.*nor model\.safetensors"):
        load_for_generation(empty)


def test_keep_holds_the_newest_n_checkpoints(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(config(data, out, checkpoint_every=2, keep=2))
    assert [p.name for p in run_folder.checkpoint_folders(out)] == ["ckpt-0000010", "ckpt-0000012"]
    assert run_folder.history(out) == ["ckpt-0000010", "ckpt-0000012"]


def test_following_the_advice_for_a_lost_latest_json_never_loses_a_checkpoint(
    data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    train(config(data, out, steps=10))
    (out / run_folder.LATEST).write_text("{ not json")
    with pytest.raises(
        tfs.CheckpointError, match=r"unreadable .*--resume. continues from the newest"
    ):
        train(config(data, out, steps=20))
    (out / run_folder.LATEST).unlink()
    with pytest.raises(
        tfs.TfsError, match=r"holds checkpoint folders \(ckpt-0000005, ckpt-0000010\)"
    ):
        train(config(data, out, steps=20))
    assert [p.name for p in run_folder.checkpoint_folders(out)] == ["ckpt-0000005", "ckpt-0000010"]
    result = train(config(data, out, steps=20, resume=True))
    assert result.step == 20
    assert run_folder.latest(out).step == 20


def test_resuming_past_an_unreadable_latest_json_says_so_once_without_the_advice(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    train(config(data, out, steps=10))
    (out / run_folder.LATEST).write_text("{ not json")
    capsys.readouterr()
    assert train(config(data, out, steps=12, resume=True)).step == 12
    said = capsys.readouterr()
    told = said.out + said.err
    assert told.count("is unreadable") == 1
    assert "resuming from the newest intact checkpoint instead" in told
    assert "--resume` continues" not in told  # it is already resuming


def test_a_damaged_newest_checkpoint_falls_back_to_an_older_kept_one(
    data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    train(config(data, out, steps=10))
    model = out / "ckpt-0000010" / "model.safetensors"
    model.write_bytes(model.read_bytes()[:-100])
    result = train(config(data, out, steps=15, resume=True))
    assert result.step == 15
    log = [r["step"] for r in read_log(out / "log.jsonl") if "loss" in r]
    assert log == sorted(set(log)) and log[-1] == 15  # steps 6..10 were run again, logged once


def test_state_paired_with_another_model_is_refused(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(config(data, out, steps=10))
    shutil.copy(out / "ckpt-0000005" / "state.safetensors", out / "ckpt-0000010")
    record = json.loads((out / run_folder.LATEST).read_text())
    state = (out / "ckpt-0000010" / "state.safetensors").read_bytes()
    record["sha256"]["state.safetensors"] = sha256(state)  # a careful hand edit
    (out / run_folder.LATEST).write_text(json.dumps(record))
    with pytest.raises(tfs.CheckpointError, match="belongs to another model file"):
        train(config(data, out, steps=15, resume=True))


def test_resuming_with_other_data_is_refused(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(config(data, out, steps=5))
    other = tmp_path / "other.txt"
    other.write_text(TEXT.replace("fox", "cat"))
    with pytest.raises(tfs.TfsError, match="the training data differs"):
        train(config(other, out, steps=10, resume=True))


def test_leftover_temporary_files_are_removed_at_the_next_start(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(config(data, out, steps=5))
    litter = [out / ".latest.json.999.tmp", out / "ckpt-0000005" / ".model.safetensors.999.tmp"]
    for path in litter:
        path.write_bytes(b"half a save")
    train(config(data, out, steps=8, resume=True))
    assert not any(path.exists() for path in litter)


def _tfs(*args: str) -> list[str]:
    script = shutil.which("tfs") or str(Path(sys.executable).parent / "tfs")
    return [script, *args]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_one_writer_per_run_folder_and_a_killed_writers_lock_is_taken_over(
    data: Path, tmp_path: Path, tfs_cli: Tfs
) -> None:
    out = tmp_path / "run"
    args = ["train", "--spec", "tiny", "--data", str(data), "--tokenizer", "char",
            "--context", "16", "--batch-size", "4", "--checkpoint-every", "5", "--eval-every",
            "1000", "--log-every", "1", "--sample-tokens", "0", "--quiet", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(_tfs(*args, "--steps", "100000"), env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while run_folder.checkpoint_folders(out) == [] and time.monotonic() < deadline:
            time.sleep(0.1)
        second = tfs_cli(*args, "--steps", "20")
        assert second.returncode == 2, second.stderr
        assert f"is being written by another training run (process {first.pid} on" in second.stderr
        assert "Traceback" not in second.stderr
        again = tfs_cli(*args, "--steps", "20", "--resume")  # options that differ from the run's
        assert again.returncode == 2, again.stderr
        assert "is being written by another training run" in again.stderr
        assert "resume:" not in again.stderr + again.stdout  # nothing told of a run not its own
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    saved = run_folder.latest(out)
    assert saved is not None
    resumed = tfs_cli(*args, "--steps", "100000", "--stop-after", "3", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"took over the lock left by process {first.pid}" in resumed.stderr + resumed.stdout
    steps = [r["step"] for r in read_log(out / "log.jsonl") if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == saved.step + 3


@pytest.mark.skipif(sys.platform == "win32", reason="signals to a child process are POSIX")
@pytest.mark.parametrize(
    ("sent", "code", "told"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")],
    ids=["ctrl-c", "sigterm"],
)
def test_ctrl_c_or_sigterm_saves_the_step_reached_and_prints_how_to_resume(
    data: Path, tmp_path: Path, sent: signal.Signals, code: int, told: str
) -> None:
    out = tmp_path / "run"
    args = ["train", "--spec", "tiny", "--data", str(data), "--tokenizer", "char", "--context",
            "16", "--batch-size", "4", "--checkpoint-every", "100000", "--eval-every", "100000",
            "--log-every", "1", "--sample-tokens", "0", "--quiet", "--steps", "100000",
            "--out", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(_tfs(*args), env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    log = out / "log.jsonl"
    while not (log.exists() and len(log.read_text().splitlines()) >= 5):
        assert time.monotonic() < deadline and child.poll() is None
        time.sleep(0.05)
    child.send_signal(sent)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == code, stderr
    assert "Traceback" not in stderr
    saved = run_folder.latest(out)
    assert saved is not None and saved.step >= 5
    assert f"{told} at step {saved.step} of 100000; saved {saved.model}" in stderr
    assert f"Continue with: tfs train --out {out} --resume" in stderr
    last_good_is_finite(out, saved.step)
