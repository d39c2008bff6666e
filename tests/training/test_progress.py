"""What the user reads while training: the speed shown is the speed logged, the sample's prompt
comes from the data."""

import io
import json
from pathlib import Path

import pytest

from tests.training.conftest import tiny_run
from transformer_from_scratch.training import loop, progress
from transformer_from_scratch.training.data import Document, opening_words


def test_the_bars_last_speed_is_the_logs_last_speed(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    made = progress.Progress.__init__

    def to_stream(self: progress.Progress, *args: object, **kwargs: object) -> None:
        made(self, *args, **{**kwargs, "stream": stream, "quiet": False})  # type: ignore[arg-type]

    monkeypatch.setattr(progress.Progress, "__init__", to_stream)
    result = loop.train(tiny_run(data, tmp_path / "run", eval_every=3, checkpoint_every=4))
    shown = [line for line in stream.getvalue().splitlines() if "tok/s" in line][-1]
    records = [
        json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    ]
    logged = [r["tokens_per_s"] for r in records if "tokens_per_s" in r][-1]
    assert f"{logged / 1000:.1f}k tok/s" in shown, (shown, logged)
    assert result.tokens_per_s > 0


def test_throughput_leaves_out_what_is_not_training() -> None:
    speed = progress.Throughput()
    speed.add(100, 1.0)
    speed.add(300, 1.0)
    assert speed.recent == 200 and speed.overall == 200
    speed.logged()
    speed.add(50, 1.0)
    assert speed.recent == 50 and speed.overall == 150


@pytest.mark.parametrize(
    ("text", "prompt"),
    [
        (b"\n\n  First Citizen:\nBefore we proceed", "First Citizen: "),
        (b"import os, sys, collections, functools\n", "import os, sys, "),
        (b"\xff\xfe broken then words", "broken then words "),
        (b"averyveryveryverylongwordwithoutspaces and more", "averyveryveryverylongwor "),
        (b"   \n\n", ""),
    ],
)
def test_the_sample_prompt_is_the_datas_opening_words(text: bytes, prompt: str) -> None:
    assert opening_words([Document("t", text)]) == prompt
