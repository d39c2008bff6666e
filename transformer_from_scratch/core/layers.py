"""Per-layer choices: override some components (or their options) for chosen blocks.

Recent models mix layer types, for example sliding-window attention on every other layer and
global attention on the rest (Gemma 2). In a spec::

    [[layers]]
    every = 2                     # blocks 0, 2, 4, ... (offset = 1 would give 1, 3, 5, ...)
    attention_kernel = { name = "materialized", options = { window = 128 } }

    [[layers]]
    indices = [0]                 # or name the blocks
    mlp = "relu"

Later entries win where they overlap. Only the kinds built per block can be overridden.
"""

import math
from collections.abc import Mapping
from typing import Any

import attrs

from transformer_from_scratch.core.component import (
    Component,
    Components,
    as_component,
    component_problems,
    unknown_keys,
    unstructure_component,
)

PER_LAYER_KINDS = ("attention", "attention_kernel", "mlp", "norm", "block")
SELECTORS = ("indices", "every", "offset")


def _components(value: Mapping[str, Any]) -> dict[str, Component]:
    return {kind: as_component(v) for kind, v in value.items()}


@attrs.frozen(kw_only=True)
class LayerOverride:
    """Components for the blocks chosen by ``indices`` or by ``every``/``offset``."""

    indices: tuple[int, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(tuple)
    )
    every: int | None = None
    offset: int = 0
    components: dict[str, Component] = attrs.field(factory=dict, hash=False, converter=_components)

    def applies_to(self, layer: int) -> bool:
        """Whether block ``layer`` is chosen."""
        if self.indices is not None:
            return layer in self.indices
        assert self.every is not None
        return layer >= self.offset and (layer - self.offset) % self.every == 0

    def to_dict(self) -> dict[str, Any]:
        """The TOML/JSON form: selector fields plus ``kind = component`` entries."""
        data: dict[str, Any] = {}
        if self.indices is not None:
            data["indices"] = list(self.indices)
        else:
            data["every"] = self.every
            if self.offset:
                data["offset"] = self.offset
        data.update({k: unstructure_component(c) for k, c in self.components.items()})
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LayerOverride":
        """Read :meth:`to_dict`'s form (checked first with :func:`override_problems`)."""
        parts = {k: v for k, v in data.items() if k in PER_LAYER_KINDS}
        selectors = {k: v for k, v in data.items() if k in SELECTORS}
        return cls(**selectors, components=parts)


def as_override(value: Any) -> LayerOverride:
    """A :class:`LayerOverride` from itself or its dict form."""
    return value if isinstance(value, LayerOverride) else LayerOverride.from_dict(value)


def as_overrides(values: Any) -> tuple[LayerOverride, ...]:
    """A tuple of overrides from a list of overrides or dicts."""
    return tuple(as_override(v) for v in values)


def apply_overrides(
    base: Components, overrides: tuple[LayerOverride, ...], layer: int
) -> Components:
    """The components of block ``layer``: ``base`` with every override that chooses it."""
    chosen = {}
    for override in overrides:
        if override.applies_to(layer):
            chosen.update(override.components)
    return attrs.evolve(base, **chosen) if chosen else base


def override_problems(data: Any, n_layers: Any, path: str) -> list[str]:
    """Every problem in one ``[[layers]]`` entry."""
    if isinstance(data, LayerOverride):
        data = data.to_dict()
    if not isinstance(data, Mapping):
        return [f"{path}: expected a table, got {data!r}"]
    problems = unknown_keys(data, [*SELECTORS, *PER_LAYER_KINDS], f"{path}.")
    problems += _selector_problems(data, n_layers, path)
    for kind in PER_LAYER_KINDS:
        if kind in data:
            problems += component_problems(data[kind], f"{path}.{kind}")
    if not any(kind in data for kind in PER_LAYER_KINDS):
        kinds = ", ".join(PER_LAYER_KINDS)
        problems.append(f'{path}: overrides nothing; add e.g. `mlp = "relu"` (kinds: {kinds})')
    return problems


def _selector_problems(data: Mapping[str, Any], n_layers: Any, path: str) -> list[str]:
    has_indices, has_every = "indices" in data, "every" in data
    if has_indices == has_every:
        return [f"{path}: give exactly one of `indices = [...]` or `every = N` to choose blocks"]
    if has_every:
        every, offset = data["every"], data.get("offset", 0)
        if not _whole(every) or every < 1:
            return [f"{path}.every: must be a positive whole number, got {every!r}"]
        if not _whole(offset) or not 0 <= offset < every:
            return [f"{path}.offset: must be a whole number in 0..{every - 1}, got {offset!r}"]
        return []
    indices = data["indices"]
    if not isinstance(indices, list | tuple) or not all(_whole(i) for i in indices) or not indices:
        return [f"{path}.indices: expected a non-empty list of block numbers, got {indices!r}"]
    if _whole(n_layers):
        bad = [i for i in indices if not 0 <= i < n_layers]
        if bad:
            return [f"{path}.indices: {bad} out of range; blocks are numbered 0..{n_layers - 1}"]
    return []


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def representative_layers(n_layers: int, overrides: tuple[LayerOverride, ...]) -> range:
    """Blocks enough to see every distinct layout: past every index and offset, overrides
    repeat with the period of their ``every`` values (so a billion layers need not be walked)."""
    if not overrides:
        return range(0)
    start = max([o.offset for o in overrides] + [i + 1 for o in overrides for i in o.indices or ()])
    period = (
        math.lcm(*(o.every for o in overrides if o.every)) if any(o.every for o in overrides) else 1
    )
    return range(min(n_layers, start + period))
