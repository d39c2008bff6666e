"""``tfs bench train`` compares models round by round, taking turns in alternating order."""

from collections.abc import Callable

import torch

from transformer_from_scratch.bench.train import _alternate, paired_ratios


def test_models_take_turns_and_the_first_alternates() -> None:
    calls: list[str] = []

    def step_of(name: str) -> Callable[[], None]:
        return lambda: calls.append(name)

    steps = {name: step_of(name) for name in ("ours", "reference")}
    samples = _alternate(steps, torch.device("cpu"), rounds=3, per_round=1)
    assert calls[4:] == ["ours", "reference", "reference", "ours", "ours", "reference"]
    assert [len(times) for times in samples.values()] == [3, 3]


def test_the_ratio_is_paired_by_round_so_a_drifting_machine_cancels_out() -> None:
    # The machine slows down 3x over the run; the decoder is always 10 % slower in its round.
    reference = [1.0, 2.0, 3.0, 3.0, 3.0]
    samples = {"ours": [t * 1.1 for t in reference], "reference": reference}
    ratios = paired_ratios(samples, "reference")
    assert abs(ratios["ours"] - 1 / 1.1) < 1e-12 and ratios["reference"] == 1.0
    # (a ratio of medians would pair round 3 of one with another round of the other)
    assert paired_ratios({"ours": [1.0]}, "reference") == {}
