"""Study files: every problem at once, by field; cells; statistics written out."""

import math
from pathlib import Path

import pytest

from tests.conftest import Tfs
from transformer_from_scratch.core.errors import TfsError
from transformer_from_scratch.study import report
from transformer_from_scratch.study.plan import load_plan
from transformer_from_scratch.study.stats import paired_t_test, summarise, t_cdf, t_quantile

GOOD = """
name = "s"
seeds = [0, 1]
[budget]
tokens = 1000
[lr]
low = 1e-4
high = 1e-2
count = 3
[[variants]]
name = "a"
[[variants]]
name = "b"
components = { positional = "rotary" }
set = { n_kv_heads = 2 }
"""


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def test_a_good_file_gives_every_cell(tmp_path: Path) -> None:
    plan = load_plan(_file(tmp_path, GOOD))
    assert plan.lrs == (1e-4, 1e-3, 1e-2) and plan.budget == ("tokens", 1000.0)
    assert plan.baseline == "a" and len(plan.cells()) == 2 * 3 * 2
    assert plan.cells()[0].key == "a/lr0.0001/seed0"


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    bad = """
    seedz = [0]
    seeds = [1, 1]
    baseline = "c"
    [budget]
    steps = -3
    [train]
    lr = 0.1
    batch = 3
    [lr]
    values = [0]
    [[variants]]
    name = "a"
    colour = "red"
    """
    with pytest.raises(TfsError) as caught:
        load_plan(_file(tmp_path, bad.replace("\n    ", "\n")))
    message = str(caught.value)
    for words in ("unknown field 'seedz'", "seeds = [1, 1]", "budget.steps = -3",
                  "train.lr: the study sets it", "train.batch: not a `tfs train` option",
                  "lr: give values", "variants[0] (a): unknown ['colour']",
                  "baseline 'c' is not one of the variants"):  # fmt: skip
        assert words in message, (words, message)


def test_statistics_match_the_tables() -> None:
    assert t_quantile(0.975, 4) == pytest.approx(2.776, abs=1e-3)
    assert t_cdf(2.0, 5) == pytest.approx(0.9490, abs=1e-4)
    s = summarise([1.0, 2.0, 3.0])
    assert s.mean == 2 and s.half_width == pytest.approx(4.303 * 1 / math.sqrt(3), abs=1e-3)
    same = paired_t_test([1.0, 2.0, 3.0], [1.1, 2.05, 3.02])
    shifted = paired_t_test([1.5, 2.6, 3.4, 4.5], [1.0, 2.0, 3.0, 4.0])
    assert same.within_noise and not shifted.within_noise and shifted.p_value < 0.01


def test_the_markdown_table_says_noise_or_real(tmp_path: Path) -> None:
    plan = load_plan(_file(tmp_path, GOOD))
    records = [{"variant": v, "lr": 1e-3, "seed": s, "val_loss": loss, "tokens_per_s": 1000.0,
                "peak_bytes": 2**20, "parameters": 10, "flops_per_token": 60.0, "steps": 5}
               for v, losses in (("a", [2.0, 2.1]), ("b", [1.5, 1.62])) for s, loss in
               zip((0, 1), losses, strict=True)]  # fmt: skip
    summary = report.summary(plan, records, {c.key: "done" for c in plan.cells()})
    table = report.markdown(summary)
    assert "| a | 0.001 | 2.0500 ±" in table and "baseline" in table
    assert "-0.4900, p=" in table


def test_report_on_a_folder_that_is_not_a_study(tfs_cli: Tfs, tmp_path: Path) -> None:
    result = tfs_cli("study", "report", str(tmp_path))
    assert result.returncode == 2 and "is not a study folder" in result.stderr


def test_a_study_may_gain_learning_rates_but_not_change_what_ran(tmp_path: Path) -> None:
    from transformer_from_scratch.study import runner

    first = _file(tmp_path, GOOD)
    folder = runner.prepare(first, tmp_path / "out")
    wider = tmp_path / "wider.toml"
    wider.write_text(GOOD.replace("count = 3", "count = 5"))
    runner.prepare(wider, folder)
    assert len(runner.folder_plan(folder).cells()) == 2 * 5 * 2
    other = tmp_path / "other.toml"
    other.write_text(GOOD.replace("tokens = 1000", "tokens = 2000"))
    with pytest.raises(TfsError, match=r"this file changes \(budget\)"):
        runner.prepare(other, folder)
