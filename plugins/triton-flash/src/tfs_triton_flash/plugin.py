"""The plugin module named by the entry point: registers the ``triton_flash`` kernel.

Importing it does not import Triton; the kernels are loaded on the first forward pass.
"""

from tfs_triton_flash.triton_flash import TritonFlash, validate
from transformer_from_scratch import Registry, hookimpl


@hookimpl
def register_components(registry: Registry) -> None:
    """Register the Triton kernel, declaring what the conformance suite should hold it to."""
    registry.register(
        "attention_kernel",
        "triton_flash",
        TritonFlash,
        capabilities=["exact", "kv_cache", "score_bias", "sliding_window", "gpu"],
        validate=validate,
        # The smallest blocks, so that the suite's short sequences span several of them.
        check_options=[{"block": 16}],
    )
