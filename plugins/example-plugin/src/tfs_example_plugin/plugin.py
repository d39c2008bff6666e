"""The plugin module named by the entry point: one hook, registering one component."""

from tfs_example_plugin.squared_relu import SquaredReLU
from transformer_from_scratch import Registry, hookimpl


@hookimpl
def register_components(registry: Registry) -> None:
    """Register the squared-ReLU MLP."""
    registry.register("mlp", "squared_relu", SquaredReLU)
