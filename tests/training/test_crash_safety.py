"""A process killed (SIGKILL) at random moments while saving always leaves a loadable checkpoint."""

import multiprocessing
import os
import random
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

import transformer_from_scratch as tfs
from transformer_from_scratch.core.checkpoint import load_decoder
from transformer_from_scratch.training import state as run_folder

KILLS = 12


def _save_forever(out: str, spec_json: str) -> None:
    """Child: save checkpoints as fast as it can; each step's weights carry the step number."""
    torch.set_num_threads(1)
    decoder = tfs.build_decoder(tfs.DecoderSpec.from_json(spec_json))
    step = run_folder.latest(Path(out)).step if (Path(out) / run_folder.LATEST).exists() else 0
    while True:
        step += 1
        with torch.no_grad():
            decoder.embedding.weight.fill_(float(step))
        state = {"rng.torch": torch.get_rng_state(), "payload": torch.randn(20_000)}
        run_folder.save(Path(out), step, decoder, {"name": "byte"}, state, {"optimizer": "{}"})


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and fork are POSIX")
def test_sigkill_during_saving_never_loses_the_last_checkpoint(tmp_path: Path) -> None:
    spec = tfs.DecoderSpec.preset("tiny")
    context = multiprocessing.get_context("fork")
    chooser = random.Random(0)
    last_step = 0
    for _ in range(KILLS):
        child = context.Process(target=_save_forever, args=(str(tmp_path), spec.to_json()))
        child.start()
        time.sleep(chooser.uniform(0.05, 0.4))
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        assert child.exitcode == -signal.SIGKILL
        saved = run_folder.latest(tmp_path)
        if saved is None:  # killed before the first checkpoint completed
            continue
        decoder = load_decoder(saved.model)
        assert float(decoder.embedding.weight[0, 0].detach()) == saved.step
        run_folder.read_state(saved)
        assert saved.step >= last_step
        last_step = saved.step
        leftovers = [p for p in tmp_path.iterdir() if p.name.startswith("ckpt-")]
        # the kept ones (3 by default) and at most one a killed save left half-written
        assert len(leftovers) <= 4
        assert set(run_folder.history(tmp_path)) <= {p.name for p in leftovers}
    assert last_step > 0
