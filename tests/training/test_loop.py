"""The training loop: exact resume, refusals that protect the user's run, and NaN handling."""

from pathlib import Path

import pytest
import torch

import transformer_from_scratch as tfs
from tests.conftest import THREADS
from tests.training.conftest import tiny_run as config
from transformer_from_scratch.core import threads
from transformer_from_scratch.core.checkpoint import load_decoder
from transformer_from_scratch.training import loop
from transformer_from_scratch.training import state as run_folder
from transformer_from_scratch.training.loop import read_log, train


def weights(out: Path) -> dict[str, torch.Tensor]:
    saved = run_folder.latest(out)
    assert saved is not None
    return load_decoder(saved.model).state_dict()


def test_stop_and_resume_is_bit_identical_to_one_run(data: Path, tmp_path: Path) -> None:
    train(config(data, tmp_path / "straight"))
    first = train(config(data, tmp_path / "split", stop_after=7))
    assert first.step == 7
    second = train(config(data, tmp_path / "split", resume=True))
    assert second.step == 12
    straight, split = weights(tmp_path / "straight"), weights(tmp_path / "split")
    assert all(torch.equal(straight[k], split[k]) for k in straight)


def test_the_log_records_loss_and_validation(data: Path, tmp_path: Path) -> None:
    result = train(config(data, tmp_path / "run"))
    records = list(read_log(tmp_path / "run" / "log.jsonl"))
    assert [r["step"] for r in records if "loss" in r] == [2, 4, 6, 8, 10, 12]
    last = records[-1]
    assert last == {
        "step": 12,
        "val_loss": result.val_loss,
        "val_accuracy": result.val_accuracy,
        "train_seconds": last["train_seconds"],
    }
    # An invariant, not a speed target: the steps' own time is part of the run's wall time.
    spent, wall = last["train_seconds"], result.seconds
    assert 0 < spent <= wall
    assert result.val_loss < records[0]["loss"]


def test_resume_without_a_checkpoint_is_an_error(data: Path, tmp_path: Path) -> None:
    with pytest.raises(tfs.TfsError, match=r"--resume: .* holds no intact checkpoint"):
        train(config(data, tmp_path / "nothing", resume=True))


def test_a_new_run_never_overwrites_an_old_one(data: Path, tmp_path: Path) -> None:
    train(config(data, tmp_path / "run", steps=5))
    before = weights(tmp_path / "run")
    with pytest.raises(tfs.TfsError, match=r"already holds a checkpoint \(step 5\); pass --resume"):
        train(config(data, tmp_path / "run", steps=5, seed=3))
    after = weights(tmp_path / "run")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_resume_with_a_different_spec_is_refused_showing_the_difference(
    data: Path, tmp_path: Path
) -> None:
    train(config(data, tmp_path / "run", steps=5))
    with pytest.raises(
        tfs.TfsError,
        match=r"--resume refused: the spec differs .*components.mlp.name: now relu, saved gelu",
    ):
        spec = tmp_path / "relu.toml"
        spec.write_text(tfs.DecoderSpec.preset("tiny").evolve(mlp="relu").to_toml())
        train(config(data, tmp_path / "run", spec=str(spec), resume=True))


def test_a_context_longer_than_n_ctx_is_refused(data: Path, tmp_path: Path) -> None:
    with pytest.raises(
        tfs.TfsError, match=r"--context 65 is longer than the spec's context window \(n_ctx = 64\)"
    ):
        train(config(data, tmp_path / "run", context=65))


def test_a_diverging_loss_stops_training_naming_the_step_and_keeping_the_checkpoint(
    data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    train(config(data, out, steps=5))
    good = weights(out)
    with pytest.raises(
        tfs.TfsError,
        match=r"the training loss became (nan|inf) at step \d+; training stopped and the last good checkpoint is .*ckpt-0000005",
    ):
        train(config(data, out, steps=60, resume=True, lr=1e9, grad_clip=None, warmup=0))
    assert run_folder.latest(out).step == 5
    assert all(torch.equal(good[k], weights(out)[k]) for k in good)


def test_a_run_says_when_it_shares_its_cores_with_other_commands(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What core.threads.share_cores decides (tested with real processes in tests/cli) is
    carried out between steps and said."""
    decisions = iter([None, 2, None, 1])  # step 1: nothing; 2: cores freed; 4: one given away

    def share_cores() -> int | None:
        count = next(decisions, None)
        if count is not None:
            torch.set_num_threads(count)
        return count

    monkeypatch.setattr(threads, "share_cores", share_cores)
    try:
        train(config(data, tmp_path / "run", steps=6, quiet=False))
    finally:
        torch.set_num_threads(THREADS)
    said = capsys.readouterr().err
    assert "step 2: 2 torch threads (the cores are free again)" in said
    assert "step 4: 1 torch thread (later commands hold cores)" in said


def test_a_run_without_a_memory_estimate_still_says_how_it_runs(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A spec whose parts cannot be counted on the meta device gets no estimate, but the
    process layout and the thread count are still said."""
    monkeypatch.setattr(loop, "count_parameters", lambda spec: None)
    train(config(data, tmp_path / "run", steps=2, quiet=False))
    said = capsys.readouterr().err
    assert "GiB per process" not in said
    assert f"running one process, {threads_said()} (no memory estimate" in said


def threads_said() -> str:
    count = torch.get_num_threads()
    return f"{count} torch thread{'s' if count != 1 else ''}"
