"""Every command takes --threads; without it, the environment or the idle cores decide."""

import pytest
import torch

from tests.conftest import THREADS
from transformer_from_scratch.cli import build_parser, main
from transformer_from_scratch.cli.args import each_command
from transformer_from_scratch.cli.threads import default_threads


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
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TFS_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.delenv("TFS_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert default_threads() == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert default_threads(one_is_best=True) == 1
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    monkeypatch.setattr("os.getloadavg", lambda: (5.2, 0.0, 0.0))
    assert default_threads() == 3  # 8 cores, about 5 busy
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert default_threads() == 2  # torchrun's 4 processes share the 8 cores
