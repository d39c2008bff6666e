"""A spec's component choices: a registered name plus options, one per kind."""

from collections.abc import Mapping
from functools import partial
from typing import Any

import attrs

from transformer_from_scratch.core.errors import did_you_mean

OPTION_TYPES = (str, int, float, bool, list)
COMPONENT_FIELDS = ["name", "options"]


def _copy_options(options: Mapping[str, Any]) -> dict[str, Any]:
    return dict(options)


@attrs.frozen
class Component:
    """One slot's choice: a registered name plus the options its factory takes."""

    name: str
    options: dict[str, Any] = attrs.field(factory=dict, hash=False, converter=_copy_options)

    def __str__(self) -> str:
        if not self.options:
            return self.name
        opts = ", ".join(f"{k}={v!r}" for k, v in sorted(self.options.items()))
        return f"{self.name}({opts})"


@attrs.frozen(kw_only=True)
class Components:
    """One :class:`Component` per kind; defaults are GPT-2's choices."""

    embedding: Component = attrs.field(factory=partial(Component, "embedding"))
    positional: Component = attrs.field(factory=partial(Component, "learned"))
    attention: Component = attrs.field(factory=partial(Component, "multi_head"))
    attention_kernel: Component = attrs.field(factory=partial(Component, "materialized"))
    mlp: Component = attrs.field(factory=partial(Component, "gelu"))
    norm: Component = attrs.field(factory=partial(Component, "layer_norm"))
    block: Component = attrs.field(factory=partial(Component, "pre_norm"))
    unembedding: Component = attrs.field(factory=partial(Component, "tied"))

    def items(self) -> list[tuple[str, Component]]:
        """``(kind, component)`` pairs in decoder order."""
        return [(field.name, getattr(self, field.name)) for field in attrs.fields(Components)]


COMPONENT_KINDS = tuple(field.name for field in attrs.fields(Components))


def as_component(value: Any) -> Component:
    """A :class:`Component` from itself, a bare name, or ``{name, options}``."""
    if isinstance(value, Component):
        return value
    if isinstance(value, str):
        return Component(value)
    return Component(value["name"], value.get("options", {}))


def unknown_keys(data: Mapping[str, Any], known: list[str], prefix: str) -> list[str]:
    """A problem for each key not in ``known``, with a suggestion."""
    return [
        f"{prefix}{key}: unknown field{did_you_mean(str(key), known)} (fields: {', '.join(known)})"
        for key in data
        if key not in known
    ]


def component_problems(value: Any, path: str) -> list[str]:
    """Problems of one component's dict form (a name, or a table of name and options)."""
    if isinstance(value, Component | str):
        return []
    if not isinstance(value, Mapping):
        return [f"{path}: expected a name or {{ name = ..., options = {{...}} }}, got {value!r}"]
    problems = unknown_keys(value, COMPONENT_FIELDS, f"{path}.")
    if not isinstance(value.get("name"), str):
        problems.append(f'{path}.name: missing or not a string; add `name = "..."`')
    options = value.get("options", {})
    if not isinstance(options, Mapping):
        problems.append(f"{path}.options: expected a table of option = value, got {options!r}")
    else:
        problems += [
            f"{path}.options.{key}: {val!r} is not a plain value (string, number, bool or list)"
            for key, val in options.items()
            if not isinstance(val, OPTION_TYPES)
        ]
    return problems


def unstructure_component(component: Component) -> Any:
    """A bare name when there are no options, else ``{name, options}``."""
    if component.options:
        return {"name": component.name, "options": dict(component.options)}
    return component.name
