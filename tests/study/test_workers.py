"""Studies: two worker processes share one study through its SQLite storage; one is killed
mid-trial, its trial is noticed (heartbeat) and run again, and no cell completes twice."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna", reason="studies need Optuna (the study or dev extra)")

from transformer_from_scratch.study import runner  # noqa: E402

STUDY = """
name = "workers"
base = "tiny"
seeds = [0, 1, 2]
data = "text.txt"
tokenizer = "char"

[budget]
steps = 300

[train]
batch_size = 4
context = 16
eval_batches = 1

[lr]
values = [3e-3]

[[variants]]
name = "learned"
components = { positional = "learned" }
"""


def _tfs() -> str:
    return shutil.which("tfs") or str(Path(sys.executable).parent / "tfs")


def _worker(folder: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TFS_STUDY_HEARTBEAT": "1", "OMP_NUM_THREADS": "1"}
    with log.open("wb") as out:
        return subprocess.Popen([_tfs(), "study", "work", str(folder)], stdout=out,
                                stderr=subprocess.STDOUT, env=env)  # fmt: skip


def _training_started(folder: Path) -> bool:
    return any("loss" in p.read_text() for p in (folder / "trials").glob("*/*/*/log.jsonl"))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "text.txt").write_text("to be or not to be, that is the question. " * 60)
    (tmp_path / "workers.toml").write_text(STUDY)
    return runner.prepare(tmp_path / "workers.toml", tmp_path / "study")


def test_a_killed_worker_s_trial_is_run_again_and_no_cell_completes_twice(
    folder: Path, tmp_path: Path
) -> None:
    doomed = _worker(folder, tmp_path / "doomed.log")
    deadline = time.monotonic() + 120
    while not _training_started(folder) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _training_started(folder), (tmp_path / "doomed.log").read_text()
    survivor = _worker(folder, tmp_path / "survivor.log")
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    assert survivor.wait(timeout=300) == 0, (tmp_path / "survivor.log").read_text()

    plan = runner.folder_plan(folder)
    with runner.quiet_optuna():
        study = runner.open_study(folder)
    trials = study.get_trials(deepcopy=False)
    complete = [t.user_attrs["cell"] for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert sorted(complete) == sorted(c.key for c in plan.cells()), "a cell ran twice or never"
    assert len(failed) == 1, "the killed worker's trial was not noticed as failed"
    assert failed[0].user_attrs["cell"] in complete  # ... and its cell was run again
    assert runner.states(study, plan) == {c.key: "done" for c in plan.cells()}
    log = (tmp_path / "survivor.log").read_text()
    assert "3/3 done, 0 running, 0 left" in log
    assert "this worker completed 3 trial(s)" in log  # the doomed one completed none


def test_report_after_the_study_gives_the_table_and_pictures(folder: Path) -> None:
    pytest.importorskip("matplotlib", reason="the report draws with matplotlib")
    assert runner.work(folder, say=lambda _: None) == 3
    records = runner.trial_records(folder)
    assert {r["seed"] for r in records} == {0, 1, 2}
    assert all(r["history"] and r["tokens"] == 300 * 4 * 16 for r in records)
    assert runner.work(folder, say=lambda _: None) == 0  # nothing left: nothing runs again
