"""Every command takes --threads; without it, the environment or the idle cores decide."""

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import IO

import pytest
import torch

from tests.conftest import THREADS
from transformer_from_scratch.cli import build_parser, main
from transformer_from_scratch.cli.args import each_command
from transformer_from_scratch.core import threads as threads_module
from transformer_from_scratch.core.errors import TfsError
from transformer_from_scratch.core.threads import (
    busy_cores,
    busy_fraction,
    claim,
    claimed_threads,
    default_threads,
)

LINUX_STAT = Path("/proc/stat").is_file()


@pytest.fixture(autouse=True)
def _restore_threads() -> object:
    yield
    torch.set_num_threads(THREADS)


def test_every_command_takes_threads_and_debug() -> None:
    commands = each_command(build_parser())
    assert {"train", "generate", "check", "spec show", "bench attention"} <= {
        p for p, _ in commands
    }
    for path, parser in commands:
        flags = {s for a in parser._actions for s in a.option_strings}
        assert {"--threads", "--debug"} <= flags, path


def test_threads_are_set_for_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["spec", "show", "tiny", "--threads", "2"]) == 0
    assert torch.get_num_threads() == 2
    assert main(["spec", "show", "tiny", "--threads", "1", "--debug"]) == 0
    assert torch.get_num_threads() == 1
    capsys.readouterr()


def test_the_default_honours_the_environment_then_the_idle_cores(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TFS_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.delenv("TFS_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert default_threads() == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert default_threads(one_is_best=True) == 1
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    monkeypatch.setattr(threads_module, "busy_cores", lambda cores: 5.2)
    assert default_threads(claims=tmp_path) == 3  # 8 cores, about 5 busy
    monkeypatch.setattr(threads_module, "busy_cores", lambda cores: 0.0)
    assert default_threads(claims=tmp_path) == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert default_threads(claims=tmp_path) == 2  # torchrun's 4 processes share the 8 cores


@pytest.mark.parametrize("text", ["abc", "0", "-2", "1.5", "2 threads"])
def test_a_malformed_tfs_threads_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    monkeypatch.setenv("TFS_THREADS", text)
    with pytest.raises(TfsError, match=r"TFS_THREADS = .* must be a whole number of threads"):
        default_threads()
    assert main(["spec", "show", "tiny"]) == 2
    assert "tfs spec: error: TFS_THREADS = " in capsys.readouterr().err


def test_an_openmp_list_gives_its_outer_level(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TFS_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3,2")
    assert default_threads() == 3


def test_busy_time_is_read_from_the_kernels_cpu_counters() -> None:
    stat = "cpu  100 5 20 800 50 1 2 3 7 0\ncpu0 50 2 10 400 25 0 1 1 3 0\n"
    later = "cpu  160 5 30 840 90 1 2 13 7 0\ncpu0 80 2 15 420 45 0 1 6 3 0\n"
    before, after = threads_module._cpu_times(stat), threads_module._cpu_times(later)
    # busy: user + nice + system + irq + softirq + steal (guest time is inside user);
    # free: idle + waiting for a disk
    assert before == (100 + 5 + 20 + 1 + 2 + 3, 131 + 850)
    assert busy_fraction(before, after) == pytest.approx((60 + 10 + 10) / (80 + 80))
    assert busy_fraction(after, after) == 0.0  # no time passed: nothing known to be busy


@pytest.mark.skipif(not LINUX_STAT, reason="reads Linux's /proc/stat")
def test_a_computing_process_counts_as_busy_and_a_finished_ones_load_average_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert busy_cores(2) >= 0.5  # one core of two is spinning (more if the machine is busy)
    finally:
        spinner.kill()
        spinner.wait()
    # The load average still counts jobs that ended a minute ago: it is not what decides.
    monkeypatch.setattr("os.getloadavg", lambda: (50.0, 50.0, 50.0))
    assert busy_cores(2) <= 2.0


CLAIMER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import torch
    from transformer_from_scratch.core import threads
    threads.CLAIMS = Path(sys.argv[1])
    threads.busy_cores = lambda cores: (time.sleep(0.3), 0.0)[1]  # an idle machine, looked at
    threads.os.cpu_count = lambda: 2
    time.sleep(max(0.0, float(sys.argv[3]) - time.time()))  # (start together, once imported)
    print(threads.use_threads(None), flush=True)
    time.sleep(float(sys.argv[2]))
    """
)


def _untold() -> dict[str, str]:
    """The environment without a thread count, so that the process chooses its own."""
    return {k: v for k, v in os.environ.items() if k not in ("TFS_THREADS", "OMP_NUM_THREADS")}


def _claimer(folder: Path, seconds: float, start: float = 0.0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CLAIMER, str(folder), str(seconds), str(start)],
        stdout=subprocess.PIPE,
        text=True,
        env=_untold(),
    )


def test_commands_started_together_see_each_others_claims(tmp_path: Path) -> None:
    start = time.time() + 5  # both have imported torch by then (else the lock is not tested)
    first, second = _claimer(tmp_path, 1.5, start), _claimer(tmp_path, 1.5, start)
    chosen = sorted(int(p.communicate(timeout=60)[0]) for p in (first, second))
    # On an idle 2-core machine the first takes both cores; the second, which sees that claim
    # although nothing computes yet, takes the one thread a process cannot go below.
    assert chosen == [1, 2]
    assert not [p for p in tmp_path.iterdir() if p.name.isdigit()]  # both withdrew at exit


def test_a_claim_counts_while_its_process_lives_and_is_cleared_when_it_was_killed(
    tmp_path: Path,
) -> None:
    holder = _claimer(tmp_path, 60)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "2"
        assert claimed_threads(tmp_path) == 2
        claim(1, tmp_path)  # this process's own claim is not counted against itself
        assert claimed_threads(tmp_path) == 2
    finally:
        holder.send_signal(signal.SIGKILL)  # no chance to withdraw its claim
        holder.communicate()
    assert (tmp_path / str(holder.pid)).exists()
    assert claimed_threads(tmp_path) == 0
    assert not (tmp_path / str(holder.pid)).exists()  # a dead process's claim is removed


SHARER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from transformer_from_scratch.core import threads
    threads.CLAIMS = Path(sys.argv[1])
    threads.busy_cores = lambda cores: 0.0  # an idle machine
    threads.os.cpu_count = lambda: 2
    print(threads.use_threads(None), flush=True)
    stop = Path(sys.argv[2])
    while not stop.exists():  # a training run's steps
        changed = threads.share_cores(every=0.05)
        if changed is not None:
            print(changed, flush=True)
        time.sleep(0.05)
    """
)


def _read_lines(stream: IO[str], lines: "queue.Queue[str]") -> None:
    with stream:
        for line in stream:
            lines.put(line.strip())


def test_a_run_gives_cores_to_a_later_command_and_takes_them_back_when_it_ends(
    tmp_path: Path,
) -> None:
    stop = tmp_path / "stop"
    first = subprocess.Popen(
        [sys.executable, "-c", SHARER, str(tmp_path), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
        env=_untold(),
    )
    said: queue.Queue[str] = queue.Queue()  # its lines as they come (nothing waits forever)
    assert first.stdout is not None
    reader = threading.Thread(target=_read_lines, args=(first.stdout, said), daemon=True)
    reader.start()
    try:
        assert said.get(timeout=60) == "2"  # alone on an idle 2-core machine: both cores
        later = _claimer(tmp_path, 3.0)
        assert later.communicate(timeout=60)[0].strip() == "1"  # the first still held both
        assert said.get(timeout=30) == "1"  # ...until it saw the later command's claim
        assert said.get(timeout=30) == "2"  # which ended: both cores again
    finally:
        stop.touch()
        first.wait(timeout=60)
        reader.join(timeout=60)


def test_claims_go_only_into_a_folder_of_this_users_own(tmp_path: Path) -> None:
    """The temporary directory is shared: a link planted where the claims folder goes (or a
    file) is neither written through nor read."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "1").write_text("64")  # (pid 1 is alive: this would count if it were read)
    planted = tmp_path / "claims"
    planted.symlink_to(elsewhere)
    claim(2, planted)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["1"]
    assert claimed_threads(planted) == 0
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    claim(2, a_file)
    assert claimed_threads(a_file) == 0 and a_file.read_text() == ""
    real = tmp_path / "real"
    claim(2, real)  # made on first use, readable by this user alone
    assert real.is_dir() and (real.stat().st_mode & 0o777) == 0o700
