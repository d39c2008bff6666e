"""Timing with warm-up and repeats: median and spread, not one lucky run."""

import statistics
import time
from collections.abc import Callable

import attrs
import torch

from transformer_from_scratch.bench.flops import sync


@attrs.frozen
class Timing:
    """Seconds per call: median, and the spread as the lower and upper quartiles."""

    median: float
    low: float
    high: float
    repeats: int

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median."""
        return (self.high - self.low) / self.median if self.median else 0.0


def measure(
    fn: Callable[[], object],
    device: torch.device,
    *,
    warmup: int = 2,
    repeats: int = 5,
    budget: float = 10.0,
) -> Timing:
    """Time ``fn``: ``warmup`` untimed calls, then up to ``repeats`` timed ones within "
    "``budget`` s."""
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    began = time.perf_counter()
    while len(times) < repeats and (not times or time.perf_counter() - began < budget):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    if len(times) < 2:
        return Timing(times[0], times[0], times[0], 1)
    low, _, high = statistics.quantiles(times, n=4, method="inclusive")
    return Timing(statistics.median(times), low, high, len(times))
