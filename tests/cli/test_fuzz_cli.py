"""Every numeric flag of every command, and every spec field and component option, fed values
generated from the parsers and signatures themselves: exit status 2, one readable message, no
traceback, and no file written or removed."""

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pytest

import transformer_from_scratch as tfs
from transformer_from_scratch.cli import build_parser, main

NUMBERS = ["nan", "inf", "-inf", "1e999", "abc", "", "-1e9", "0x"]
NEGATIVE_WHOLE = "-5"  # no count, size or length may be negative; only seeds take any integer
SPEC_VALUES: list[Any] = [0, -3, 2.5, "x", None, True, [], {}, float("nan"), 10**30]
OPTION_VALUES: list[Any] = [float("nan"), float("inf"), -1, 0, "zz", [1], {"a": 1}]


def _numeric_flags(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[Any]:
    """(command path, flag, is whole number) for every typed option, subcommands included."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _numeric_flags(sub, (*path, name))
        elif action.option_strings and action.type not in (None, str, Path):
            found.append((path, action.option_strings[-1], action.type is int))
    return found


FLAGS = _numeric_flags(build_parser())
CASES = [
    (path, flag, value)
    for path, flag, whole in FLAGS
    for value in NUMBERS + ([NEGATIVE_WHOLE] if whole and flag != "--seed" else [])
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("fuzz")
    data = root / "text.txt"
    data.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    run = root / "made"
    code = main(["train", "--spec", "tiny", "--data", str(data), "--tokenizer", "char",
                 "--steps", "2", "--batch-size", "2", "--context", "8", "--sample-tokens", "0",
                 "--quiet", "--out", str(run)])  # fmt: skip
    assert code == 0
    return {"data": str(data), "checkpoint": str(run), "root": str(root)}


def _base(path: tuple[str, ...], world: dict[str, str], out: Path) -> list[str]:
    bases = {
        ("train",): ["--spec", "tiny", "--data", world["data"], "--tokenizer", "char",
                     "--steps", "2", "--batch-size", "2", "--context", "8", "--sample-tokens",
                     "0", "--quiet", "--out", str(out / "run")],
        ("generate",): ["--checkpoint", world["checkpoint"], "--max-new-tokens", "2"],
        ("check",): ["relu"],
        ("spec", "show"): ["tiny", "--memory"],
        ("spec", "diff"): ["tiny", "small"],
        ("list",): [],
        ("build",): ["tiny"],
        ("bench", "attention"): ["--lengths", "8", "--kernels", "materialized"],
        ("bench", "train"): ["--spec", "tiny"],
        ("new-plugin",): ["tfs-fuzz", "--kind", "mlp", "--out", str(out / "plugin")],
        ("study", "run"): [str(out / "study.toml")],
        ("study", "work"): [str(out)],
        ("study", "report"): [str(out)],
        ("export",): [world["checkpoint"], str(out / "exported.safetensors")],
        ("inspect",): ["--checkpoint", world["checkpoint"], "--prompt", "the", "--out",
                       str(out / "inspect")],
    }  # fmt: skip
    assert path in bases, f"give `{' '.join(path)}` a valid base command line in this test"
    return [*path, *bases[path]]


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def _one_readable_error(code: int, err: str, what: str) -> None:
    assert code == 2, f"{what}: exit {code}\n{err}"
    assert "Traceback" not in err, f"{what}: a traceback\n{err}"
    assert "error:" in err and err.strip(), f"{what}: no error message\n{err}"


@pytest.mark.parametrize(("path", "flag", "value"), CASES,
                         ids=[f"{' '.join(p)} {f}={v!r}" for p, f, v in CASES])  # fmt: skip
def test_an_invalid_number_is_one_clear_error(
    path: tuple[str, ...], flag: str, value: str, world: dict[str, str], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    before = _files(tmp_path), _files(Path(world["root"]))
    try:
        code = main([*_base(path, world, tmp_path), f"{flag}={value}"])
    except SystemExit as exit:  # argparse refuses unparseable values itself
        code = int(exit.code or 0)
    _one_readable_error(code, capsys.readouterr().err, f"{' '.join(path)} {flag}={value!r}")
    assert (_files(tmp_path), _files(Path(world["root"]))) == before, "files changed"


def _spec_cases() -> list[tuple[str, Any]]:
    base = tfs.DecoderSpec.preset("tiny").to_dict()
    cases = [(field, value) for field in base if field not in ("components", "spec_version")
             for value in SPEC_VALUES]  # fmt: skip
    for entry in tfs.load_registry(autoload=False).entries():
        for option in entry.options() or {}:
            cases += [(f"{entry.kind}/{entry.name}.{option}", v) for v in OPTION_VALUES]
    return cases


def _spec_with(field: str, value: Any) -> dict[str, Any]:
    data = tfs.DecoderSpec.preset("tiny").to_dict()
    if "/" not in field:
        data[field] = value
        return data
    kind_name, option = field.split(".")
    kind, name = kind_name.split("/")
    data["components"][kind] = {"name": name, "options": {option: value}}
    return data


def _is_clearly_wrong(field: str, value: Any) -> bool:
    """Values no field or option can take: non-finite, containers, None for a size."""
    if isinstance(value, float) and not math.isfinite(value):
        return True
    if isinstance(value, list | dict):
        return True
    return (
        "/" not in field
        and field not in ("n_kv_heads", "final_norm", "layers", "dropout")
        and (value is None or isinstance(value, str) or (isinstance(value, int) and value <= 0))
    )


@pytest.mark.parametrize(("field", "value"), _spec_cases())
def test_spec_fields_and_options_fail_cleanly(
    field: str, value: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(_spec_with(field, value)))
    before = _files(tmp_path)
    try:
        code = main(["build", str(path)])
    except SystemExit as exit:
        code = int(exit.code or 0)
    err = capsys.readouterr().err
    assert _files(tmp_path) == before
    if _is_clearly_wrong(field, value):
        _one_readable_error(code, err, f"{field} = {value!r}")
    else:  # may be fine (0 for a bool, "x" for a string option): then it builds, else exit 2
        assert code in (0, 2) and "Traceback" not in err, f"{field} = {value!r}: {err}"
