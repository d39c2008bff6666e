"""Checks of a spec against a registry: names, options and whether the parts fit together.

All of it runs before a single weight is allocated, and every problem is reported at once.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformer_from_scratch.core.component import Components
from transformer_from_scratch.core.errors import IncompatibleComponentsError, SpecError
from transformer_from_scratch.core.plugins import default_registry
from transformer_from_scratch.core.registry import Entry, Registry
from transformer_from_scratch.core.spec import SIZE_FIELDS, DecoderSpec, dict_problems


def name_problems(
    components: Components, registry: Registry, where: str = "components"
) -> list[str]:
    """Unknown names and unknown or missing options (no sizes needed)."""
    problems: list[str] = []
    for kind, component in components.items():
        if component.name not in registry.names(kind):
            problems.append(f"{where}.{kind}: {registry_error(registry, kind, component.name)}")
            continue
        entry = registry.get(kind, component.name)
        options = dict(component.options)
        if "sliding_window" not in entry.capabilities:
            options.pop("window", None)  # reported by fit_problems, with what would fit
        problems += entry.option_problems(options, f"{where}.{kind}.options")
    return problems


def spec_problems(spec: DecoderSpec, registry: Registry) -> list[str]:
    """:func:`name_problems` and the problems each implementation's validator reports, for
    every component at once (a validator runs where its name and options are sound)."""
    problems: list[str] = []
    for where, components in spec.all_components():
        problems += name_problems(components, registry, where)
        for kind, component in components.items():
            problems += _validator_problems(spec, kind, component.name, component.options,
                                            registry, f"{where}.{kind}")  # fmt: skip
    return _unique(problems)


def _validator_problems(spec: DecoderSpec, kind: str, name: str, options: Mapping[str, Any],
                        registry: Registry, where: str) -> list[str]:  # fmt: skip
    if (kind, name) not in registry:
        return []
    entry = registry.get(kind, name)
    if entry.validate is None or entry.option_problems(options, where):
        return []
    try:
        return [f"{where}: {p}" for p in entry.validate(spec.dims, options)]
    except Exception as exc:  # a plugin's validator with a bug must not hide the rest
        return [f"{where}: the validator of {entry.id} ({entry.provider}) raised {exc!r}"]


def _unique(problems: list[str]) -> list[str]:
    return list(dict.fromkeys(problems))


def registry_error(registry: Registry, kind: str, name: str) -> str:
    """The unknown-name message for ``kind``/``name``."""
    try:
        registry.get(kind, name)
    except LookupError as err:
        return str(err)
    return ""


def fit_problems(spec: DecoderSpec, registry: Registry) -> list[str]:
    """Parts that cannot work together, each naming both parts and what would fit."""
    problems: list[str] = []
    for where, components in spec.all_components():
        problems += _fit(components, registry, where)
    return _unique(problems)


def _fit(components: Components, registry: Registry, where: str) -> list[str]:
    # Unknown names are reported by name_problems; the pairs of known parts are checked here.
    parts = {k: registry.get(k, c.name) for k, c in components.items() if (k, c.name) in registry}
    positional, attention = parts.get("positional"), parts.get("attention")
    kernel = parts.get("attention_kernel")
    problems = []
    for need, lacks in (("rotary", attention), ("score_bias", attention), ("score_bias", kernel)):
        if positional and lacks and need in positional.capabilities - lacks.capabilities:
            problems.append(_misfit(positional, lacks, need, registry, where))
    if (
        kernel is not None
        and "window" in components.attention_kernel.options
        and "sliding_window" not in kernel.capabilities
    ):
        fits = _with_capability(registry, kernel.kind, "sliding_window")
        problems.append(
            f"{where}.attention_kernel.options.window: {kernel.id} cannot honour a sliding "
            f"window (no 'sliding_window' capability); use a kernel that can ({fits}) or drop it"
        )
    return problems


def _misfit(needs: Entry, lacks: Entry, capability: str, registry: Registry, where: str) -> str:
    fits = _with_capability(registry, lacks.kind, capability)
    return (
        f"{where}.{lacks.kind}: {needs.id} needs the {capability!r} capability, which "
        f"{lacks.id} does not declare; use {_article(lacks.kind)} {lacks.kind} that has it ({fits})"
    )


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _with_capability(registry: Registry, kind: str, capability: str) -> str:
    names = [e.name for e in registry.entries(kind) if capability in e.capabilities]
    return ", ".join(names) if names else "none is installed"


def check_spec(spec: DecoderSpec, registry: Registry) -> None:
    """Raise one :class:`SpecError` listing every problem of ``spec`` against ``registry``."""
    problems, misfits = spec_problems(spec, registry), fit_problems(spec, registry)
    if problems:
        raise SpecError([*problems, *misfits])
    if misfits:
        raise IncompatibleComponentsError(misfits)


def load_spec(path: str | Path, registry: Registry | None = None) -> DecoderSpec:
    """Read a TOML or JSON spec file and check it against the registry."""
    registry = registry or default_registry()
    try:
        spec = DecoderSpec.from_file(path)
    except SpecError as err:
        # Report the registry's view of the components in the same breath, when they parse.
        extra = name_problems(components_of(err.data), registry) if err.data else []
        raise SpecError([*err.problems, *extra], source=str(path)) from None
    try:
        check_spec(spec, registry)
    except SpecError as err:
        raise type(err)(err.problems, source=str(path)) from None
    return spec


def components_of(data: Mapping[str, Any]) -> Components:
    """The components part of a spec dict, or the defaults when it does not parse."""
    comps = data.get("components", {})
    if isinstance(comps, Mapping) and not dict_problems({**_PLACEHOLDER, "components": comps}):
        return DecoderSpec.from_dict({**_PLACEHOLDER, "components": comps}).components
    return Components()


# Valid sizes, so a spec's components can be checked on their own.
_PLACEHOLDER = {key: 2 for key in SIZE_FIELDS}
