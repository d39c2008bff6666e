"""Build a registry: the built-in plugin first, then every installed entry point, each isolated.

Pluggy's own ``load_setuptools_entrypoints`` stops at the first plugin that fails to import, so
entry points are loaded here one at a time. A plugin that fails to import, raises, calls
``sys.exit``, declares a misspelt hook or clashes with a registered name is recorded as a
:class:`~transformer_from_scratch.core.registry.PluginFailure` (and warned about); the others
still load. Environment switches:

- ``TFS_STRICT_PLUGINS=1``: any plugin failure raises :class:`PluginError` instead.
- ``TFS_DISABLE_PLUGIN_AUTOLOAD=1``: load the built-in components only.
"""

import functools
import importlib
import os
import warnings
from collections.abc import Iterable
from importlib import metadata

import pluggy

from transformer_from_scratch.core import hookspecs
from transformer_from_scratch.core.errors import PluginError
from transformer_from_scratch.core.registry import PluginFailure, Provider, Registry

DISTRIBUTION = "transformer-from-scratch"
# Built-in components are a plugin like any other, loaded by name (as pytest's default plugins
# are) so that `core` never imports `components`.
BUILTIN_PLUGINS = ("transformer_from_scratch.components.plugin",)


class PluginLoadWarning(UserWarning):
    """A plugin failed to load and was skipped (set TFS_STRICT_PLUGINS=1 to make it fatal)."""


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def load_registry(
    *,
    autoload: bool | None = None,
    strict: bool | None = None,
    plugins: Iterable[tuple[Provider, object]] = (),
) -> Registry:
    """A fresh registry: built-ins, then installed entry points, then ``plugins`` (for tests).

    ``autoload`` and ``strict`` default to the environment switches described above.
    """
    autoload = not _flag("TFS_DISABLE_PLUGIN_AUTOLOAD") if autoload is None else autoload
    strict = _flag("TFS_STRICT_PLUGINS") if strict is None else strict
    registry = Registry()
    for module_name in BUILTIN_PLUGINS:
        builtin = Provider("builtin", DISTRIBUTION, _own_version())
        _install(registry, builtin, importlib.import_module(module_name), strict=True)
    if autoload:
        found = _entry_points()
        _report_shared_names(registry, found, strict)
        for entry_point in found:
            _load_entry_point(registry, entry_point, strict=strict)
    for provider, plugin in plugins:
        _install(registry, provider, plugin, strict=strict)
    return registry


@functools.cache
def default_registry() -> Registry:
    """The process-wide registry, loaded on first use; ``default_registry.cache_clear()`` resets."""
    return load_registry()


def _entry_points() -> list[metadata.EntryPoint]:
    found = metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP)
    return sorted(found, key=lambda ep: ep.name)


def _report_shared_names(
    registry: Registry, found: list[metadata.EntryPoint], strict: bool
) -> None:
    """Two distributions exposing one entry-point name: both load, and the clash is reported."""
    by_name: dict[str, list[str]] = {}
    for entry_point in found:
        dist = entry_point.dist
        by_name.setdefault(entry_point.name, []).append(
            f"{dist.name} {dist.version}" if dist is not None else "<unknown distribution>"
        )
    for name, dists in sorted(by_name.items()):
        if len(dists) > 1:
            provider = Provider(name, " and ".join(dists), "")
            message = (
                f"the entry point name {name!r} is exposed by {len(dists)} distributions "
                f"({', '.join(dists)}); both are loaded, but reports name plugins by entry "
                "point: rename one in its pyproject.toml"
            )
            _fail(registry, provider, message, strict, PluginError(message))


def _load_entry_point(registry: Registry, entry_point: metadata.EntryPoint, strict: bool) -> None:
    dist = entry_point.dist
    provider = Provider(
        entry_point.name,
        dist.name if dist is not None else "<unknown distribution>",
        dist.version if dist is not None else "",
    )
    try:
        plugin = entry_point.load()
    except BaseException as exc:  # KeyboardInterrupt or SystemExit too: the others still load
        _fail(
            registry,
            provider,
            f"could not be imported ({entry_point.value}): {_describe(exc)}",
            strict,
            exc,
        )
        return
    _install(registry, provider, plugin, strict=strict)


def _install(registry: Registry, provider: Provider, plugin: object, *, strict: bool) -> None:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    staging = Registry(provider)
    try:
        manager.register(plugin, name=provider.plugin)
        manager.check_pending()
        if not manager.hook.register_components.get_hookimpls():
            raise PluginError(
                "defines no @hookimpl register_components(registry); see the README's plugin guide"
            )
        manager.hook.register_components(registry=staging)
        registry.merge(staging)
    except BaseException as exc:  # KeyboardInterrupt or SystemExit too: the others still load
        _fail(registry, provider, _describe(exc), strict, exc)


def _fail(
    registry: Registry, provider: Provider, message: str, strict: bool, exc: BaseException
) -> None:
    failure = PluginFailure(provider.plugin, provider.distribution, provider.version, message)
    if strict:
        raise PluginError(f"{failure} (TFS_STRICT_PLUGINS is set)") from exc
    registry.failures.append(failure)
    warnings.warn(
        f"{failure}; skipped (set TFS_STRICT_PLUGINS=1 to make this fatal)",
        PluginLoadWarning,
        stacklevel=4,
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r})"
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _own_version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "0+unknown"
