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


def test_the_ratio_is_the_median_of_the_rounds_ratios() -> None:
    reference = [1.0, 2.0, 3.0]
    samples = {"ours": [3.3, 1.1, 2.2], "reference": reference}  # 0.30x, 1.82x, 1.36x
    ratios = paired_ratios(samples, "reference")
    assert abs(ratios["ours"] - 3.0 / 2.2) < 1e-12 and ratios["reference"] == 1.0
    assert paired_ratios({"ours": [1.0]}, "reference") == {}
