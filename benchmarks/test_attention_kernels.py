"""Every registered attention kernel, forward and forward + backward, across lengths.

    pytest benchmarks/test_attention_kernels.py --benchmark-json=attention.json

For tables with FLOP/s and peak memory, use ``tfs bench attention``.
"""

import pytest
import torch

from transformer_from_scratch import default_registry
from transformer_from_scratch.bench.attention import Case, _call, default_kernels

KERNELS = default_kernels(default_registry(), "cpu")


@pytest.mark.parametrize("length", [128, 512])
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel(benchmark, kernel: str, backward: bool, length: int) -> None:  # type: ignore[no-untyped-def]
    run = _call(Case(kernel, length, batch=1, heads=4, d_head=32, backward=backward))
    benchmark(run)
    assert torch.isfinite(torch.tensor(benchmark.stats.stats.median))
