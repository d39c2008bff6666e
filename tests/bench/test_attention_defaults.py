"""Which kernels ``tfs bench attention`` times when none are named."""

from transformer_from_scratch import Registry
from transformer_from_scratch.bench.attention import default_kernels
from transformer_from_scratch.components.materialized import Materialized


def test_a_kernel_declaring_gpu_is_timed_on_a_gpu_only(builtin_registry: Registry) -> None:
    builtin_registry.register(
        "attention_kernel", "emulated", Materialized, capabilities=["exact", "gpu"]
    )
    everything = builtin_registry.names("attention_kernel")
    assert "emulated" in everything
    assert default_kernels(builtin_registry, "cuda") == everything
    assert default_kernels(builtin_registry, "cuda:1") == everything
    on_cpu = default_kernels(builtin_registry, "cpu")
    assert on_cpu == [name for name in everything if name != "emulated"]
