"""The quality reference on tinyshakespeare (slow: about 90 s on 2 cores; `pytest -m slow`)."""

from pathlib import Path

import pytest

from transformer_from_scratch.training.config import TrainConfig
from transformer_from_scratch.training.loop import train

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "tinyshakespeare.txt"


@pytest.mark.slow
@pytest.mark.skipif(not DATA.exists(), reason=f"{DATA} is not on this machine")
def test_character_level_shakespeare_reaches_the_reference_neighbourhood(tmp_path: Path) -> None:
    config = TrainConfig(
        spec="small", data=str(DATA), tokenizer="char", context=64, batch_size=12, steps=2000,
        lr=1e-3, min_lr=1e-4, warmup=100, beta2=0.99, eval_every=1000, eval_batches=50,
        sample_tokens=0, out=str(tmp_path / "run"), quiet=True,
    )  # fmt: skip
    result = train(config)
    # Measured 1.899-1.914 over three seeds; the plain-PyTorch figure for this setting is 1.88.
    # This guards against regressions; the README records the figures.
    assert result.val_loss < 1.93
