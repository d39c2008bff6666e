"""The plugin contract: one hook, written like an API.

A plugin is any module (or object) named by an entry point in the group
``transformer_from_scratch``; it implements hooks by decorating functions with :data:`hookimpl`::

    from transformer_from_scratch import hookimpl

    @hookimpl
    def register_components(registry):
        registry.register("mlp", "squared_relu", SquaredReLU, capabilities=())
"""

import pluggy

from transformer_from_scratch.core.registry import Registry

PROJECT = "transformer_from_scratch"
ENTRY_POINT_GROUP = PROJECT

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_components(registry: Registry) -> None:
    """Register this plugin's implementations by calling ``registry.register(kind, name, factory)``.

    Called once per plugin, with a registry scoped to that plugin: what it registers is stamped
    with the plugin's distribution and version, and is added all at once after the hook returns.
    If the hook raises, nothing it registered is kept, and the failure is reported.
    """
