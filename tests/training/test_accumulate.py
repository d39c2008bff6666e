"""``--accumulate N``: each optimiser step's batch in N passes, the same training in less memory."""

from pathlib import Path

import pytest

from tests.training.conftest import logged_losses as _losses
from tests.training.conftest import tiny_run as config
from transformer_from_scratch.core.errors import TfsError
from transformer_from_scratch.training.loop import run_trainer, train


def test_passes_add_up_to_the_whole_batch(data: Path, tmp_path: Path) -> None:
    whole = train(config(data, tmp_path / "whole", steps=6, batch_size=8, log_every=1))
    parts = train(config(data, tmp_path / "parts", steps=6, batch_size=8, log_every=1,
                         accumulate=4))  # fmt: skip
    assert len(_losses(tmp_path / "parts")) == 6
    # the same gradients, summed in another order: equal to float32 rounding
    assert _losses(tmp_path / "parts") == pytest.approx(_losses(tmp_path / "whole"), rel=1e-5)
    assert parts.val_loss == pytest.approx(whole.val_loss, rel=1e-5)


def test_each_pass_runs_a_part_of_the_batch(data: Path, tmp_path: Path) -> None:
    _, trainer = run_trainer(config(data, tmp_path / "run", steps=1, batch_size=8, accumulate=4))
    sizes: list[int] = []
    handle = trainer.decoder.register_forward_pre_hook(lambda _, args: sizes.append(len(args[0])))
    trainer.train_step()
    handle.remove()
    assert sizes == [2, 2, 2, 2]


def test_the_memory_estimate_is_for_one_pass(data: Path, tmp_path: Path) -> None:
    _, whole = run_trainer(config(data, tmp_path / "whole", steps=1, batch_size=8))
    _, parts = run_trainer(config(data, tmp_path / "parts", steps=1, batch_size=8, accumulate=4))
    assert whole.memory is not None and parts.memory is not None
    assert parts.memory.total < whole.memory.total


def test_a_batch_that_does_not_split_is_refused(data: Path, tmp_path: Path) -> None:
    with pytest.raises(TfsError, match=r"--batch-size 6 does not split into --accumulate 4"):
        train(config(data, tmp_path / "run", batch_size=6, accumulate=4))
    with pytest.raises(TfsError, match=r"--accumulate = 0 is out of range"):
        train(config(data, tmp_path / "zero", accumulate=0))
