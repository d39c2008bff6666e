"""``tfs inspect``: pictures and numbers from a real run folder, through the real command."""

import json
from pathlib import Path

import pytest

from tests.conftest import Tfs

pytest.importorskip("matplotlib", reason="tfs inspect draws with matplotlib (the plot extra)")
TEXT = "to be or not to be, that is the question. " * 80


@pytest.fixture
def run(tfs_cli: Tfs, tmp_path: Path) -> Path:
    data = tmp_path / "play.txt"
    data.write_text(TEXT)
    out = tmp_path / "run"
    made = tfs_cli("train", "--spec", "tiny", "--steps", "3", "--batch-size", "2", "--context",
                   "16", "--tokenizer", "char", "--sample-tokens", "0", "--quiet", "--data",
                   str(data), "--out", str(out))  # fmt: skip
    assert made.returncode == 0, made.stderr
    return out


def test_inspect_draws_patterns_lens_and_patching_with_their_numbers(
    tfs_cli: Tfs, run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pictures"
    result = tfs_cli("inspect", "--checkpoint", str(run), "--prompt", "to be or not",
                     "--out", str(out), "--patch", "that is", "not to ")  # fmt: skip
    assert result.returncode == 0, result.stderr
    for name in ("attention.png", "logit_lens.png", "patching.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name
        assert f"wrote {out / name}" in result.stdout
    numbers = json.loads((out / "inspect.json").read_text())
    n = len("to be or not")
    assert numbers["labels"][2] == "␣" and len(numbers["tokens"]) == n
    layers, heads = 2, 4  # the tiny preset
    assert len(numbers["patterns"]) == layers and len(numbers["patterns"][0]) == heads
    row = numbers["patterns"][1][0][n - 1]
    assert abs(sum(row) - 1) < 1e-3 and len(row) == n
    assert len(numbers["logit_lens"]["top_tokens"]) == layers + 1
    assert len(numbers["patching"]["grid"]) == layers and len(numbers["patching"]["grid"][0]) == 7
    assert "next token:" in result.stdout


def test_inspect_refuses_patch_prompts_of_different_lengths(
    tfs_cli: Tfs, run: Path, tmp_path: Path
) -> None:
    result = tfs_cli("inspect", "--checkpoint", str(run), "--prompt", "to be",
                     "--out", str(tmp_path / "p"), "--patch", "to be", "not to be")  # fmt: skip
    assert result.returncode == 2
    assert "same length in tokens; CLEAN has 5 and CORRUPT 9" in result.stderr
