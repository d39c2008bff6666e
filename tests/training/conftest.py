"""A small text and a tiny training run, shared by the training tests."""

from pathlib import Path
from typing import Any

import pytest

from transformer_from_scratch.training.config import TrainConfig
from transformer_from_scratch.training.loop import read_log

TEXT = "the quick brown fox jumps over the lazy dog. " * 60


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "text.txt"
    path.write_text(TEXT)
    return path


def tiny_run(data: Path, out: Path, **changes: Any) -> TrainConfig:
    """A seconds-long run of the `tiny` preset on ``data``, checkpointing every 5 steps."""
    base = {"spec": "tiny", "data": str(data), "tokenizer": "char", "steps": 12, "batch_size": 4,
            "context": 16, "lr": 3e-3, "warmup": 3, "eval_every": 4, "eval_batches": 2,
            "checkpoint_every": 5, "log_every": 2, "sample_tokens": 0, "out": str(out), "quiet": True}  # fmt: skip
    return TrainConfig(**{**base, **changes})


def logged_losses(out: Path) -> list[float]:
    """The training losses a run in ``out`` logged, in order."""
    return [r["loss"] for r in read_log(out / "log.jsonl") if "loss" in r]
