"""The pieces of multi-process training one process can check: per-process random streams and
gathering to one process."""

import torch

from transformer_from_scratch.training.distributed import World, process_seed


def test_every_process_and_every_resume_gets_its_own_stream() -> None:
    for seed in (0, 1, 1234, 2**40):
        seeds = {process_seed(seed, rank, step) for rank in range(64) for step in (0, 10, 500)}
        assert len(seeds) == 64 * 3  # no two processes (or resumes) share a stream
        assert seed not in seeds  # nor the stream the weights were built from
        assert all(0 <= s < 2**63 for s in seeds)  # torch.manual_seed's range
    assert process_seed(0, 1) != process_seed(1, 0)  # runs of other seeds differ too


def test_gathering_alone_stacks_the_one_value() -> None:
    state = torch.get_rng_state()
    gathered = World().gather(state)
    assert gathered.shape == (1, *state.shape) and torch.equal(gathered[0], state)
