"""The core: kinds, registry, plugins, specs, builder and decoder; no implementation by name."""
