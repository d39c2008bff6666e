"""The attention benchmark's picture: a colour per kernel, a line style per mode, legend off the
data, the measured lengths as tick labels; and recorded results re-plot from their JSON."""

from pathlib import Path

import pytest

from transformer_from_scratch.bench import report
from transformer_from_scratch.bench.attention import Case, Result
from transformer_from_scratch.bench.timing import Timing

pytest.importorskip("matplotlib", reason="the plot needs matplotlib (the dev or plot extra)")
RECORDED = Path(__file__).parents[2] / "benchmarks" / "results" / "attention_cpu.json"


def _results() -> list[Result]:
    out = []
    for kernel in ("materialized", "flash", "sdpa"):
        for backward in (False, True):
            for i, length in enumerate((256, 1024, 4096)):
                t = 1e-3 * (i + 1) * (2 if backward else 1)
                case = Case(kernel, length, backward=backward)
                out.append(Result(case, "ok", Timing(t, t, t, 3), peak_bytes=2**20 * (i + 1)))
    return out


def test_one_colour_per_kernel_and_a_line_style_per_mode() -> None:
    drawn = report.figure(_results(), "test")
    for axis in drawn.axes:
        lines = axis.get_lines()
        assert len(lines) == 6
        colours = [tuple(line.get_color()) for line in lines]  # sorted: kernel, then mode
        assert colours[0::2] == colours[1::2], "fwd and fwd+bwd of a kernel differ in colour"
        assert len(set(colours)) == 3, "two kernels share a colour"
        styles = (
            {(line.get_linestyle()) for line in lines[0::2]},
            {ln.get_linestyle() for ln in lines[1::2]},
        )
        assert styles == ({"--"}, {"-"})


def test_lengths_are_the_tick_labels_and_the_legend_is_off_the_data() -> None:
    drawn = report.figure(_results(), "test")
    drawn.canvas.draw()
    renderer = drawn.canvas.get_renderer()
    [legend] = drawn.legends
    box = legend.get_window_extent(renderer)
    for axis in drawn.axes:
        assert [t.get_text() for t in axis.get_xticklabels()] == ["256", "1,024", "4,096"]
        assert not box.overlaps(axis.get_window_extent(renderer)), "the legend covers a plot"
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == ["flash", "materialized", "sdpa", "fwd", "fwd+bwd"]


def test_recorded_results_replot(tmp_path: Path) -> None:
    results = report.read_json(RECORDED)
    assert results and all(r.status in ("ok", "OOM", "error") for r in results)
    report.plot(tmp_path / "again.png", results, "again")
    assert (tmp_path / "again.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
