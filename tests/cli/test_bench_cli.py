"""``tfs bench attention`` and ``tfs bench train`` on tiny sizes, run as a user runs them."""

import json
from pathlib import Path

import pytest

from tests.conftest import Tfs


def test_bench_attention_prints_tables_and_writes_json_and_a_plot(
    tfs_cli: Tfs, tmp_path: Path
) -> None:
    out, png = tmp_path / "attention.json", tmp_path / "attention.png"
    result = tfs_cli("bench", "attention", "--kernels", "materialized,flash", "--seq", "16,32", "--heads", "2",
                     "--d-head", "8", "--repeats", "2", "--json", str(out), "--plot", str(png))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "length 16, fwd" in result.stdout and "length 32, fwd+bwd" in result.stdout
    assert "memory: peak RSS (VmHWM, reset per case), own process" in result.stdout
    data = json.loads(out.read_text())
    assert len(data["results"]) == 8
    assert all(
        r["status"] == "ok" and r["median_s"] > 0 and r["tflops"] > 0 for r in data["results"]
    )
    assert data["baseline"] == "materialized" and data["machine"]["torch"]
    assert png.read_bytes().startswith(b"\x89PNG")


def test_bench_attention_names_an_unknown_kernel(tfs_cli: Tfs) -> None:
    result = tfs_cli("bench", "attention", "--kernels", "flsh")
    assert result.returncode == 2
    assert "unknown attention_kernel 'flsh'; did you mean 'flash'?" in result.stderr


def test_bench_train_reports_tokens_per_second_mfu_and_the_ratio(tfs_cli: Tfs) -> None:
    result = tfs_cli(
        "bench",
        "train",
        "--spec",
        "tiny",
        "--set",
        "n_ctx=32",
        "--batch-size",
        "2",
        "--rounds",
        "1",
        "--tf32",
        "--accumulate",
        "3",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert ", TF32 on " in lines[0] and "batch 2 x 3 per optimiser step" in lines[0]
    assert "FLOPs per token" in lines[1] and "measured peak" in lines[1]
    rows = {line.split()[0]: line.split() for line in lines[4:6]}
    assert set(rows) == {"from-scratch", "reference"}
    assert rows["reference"][-1] == "1.00x"
    assert rows["from-scratch"][3].endswith("%")


def test_bench_train_refuses_a_malformed_set(tfs_cli: Tfs) -> None:
    result = tfs_cli("bench", "train", "--spec", "tiny", "--set", "d_model")
    assert result.returncode == 2
    assert "write FIELD=VALUE" in result.stderr


def test_bench_set_names_an_unknown_field_without_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from transformer_from_scratch.cli import main

    assert main(["bench", "train", "--spec", "tiny", "--set", "d_modle=64"]) == 2
    err = capsys.readouterr().err
    assert "d_modle: unknown field; did you mean 'd_model'?" in err and "Traceback" not in err
    assert main(["bench", "train", "--spec", "tiny", "--set", "d_model"]) == 2
    assert "--set 'd_model': write FIELD=VALUE" in capsys.readouterr().err
