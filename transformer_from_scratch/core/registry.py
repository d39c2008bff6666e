"""The registry: every implementation of every kind, under its name, with who provided it.

A :class:`Registry` is a small class holding a private dict of frozen :class:`Entry` records,
keyed by ``(kind, name)``. Plugins fill it through :meth:`Registry.register`; the builder reads
it through :meth:`Registry.get`. Nothing here knows any particular implementation.
"""

import inspect
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import attrs
from torch import nn

from transformer_from_scratch.core.dims import Dims
from transformer_from_scratch.core.errors import (
    DuplicateComponentError,
    TfsError,
    UnknownComponentError,
    did_you_mean,
    unknown_name_message,
)
from transformer_from_scratch.core.kinds import kind_info

Factory = Callable[..., nn.Module]
Validator = Callable[[Dims, Mapping[str, Any]], Iterable[str]]
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_UNIONS = (typing.Union, types.UnionType)


@attrs.frozen
class Provider:
    """Who registered an entry: the plugin (entry point) name and its distribution."""

    plugin: str
    distribution: str
    version: str

    def __str__(self) -> str:
        return f"{self.distribution} {self.version} (plugin {self.plugin!r})"


UNKNOWN_PROVIDER = Provider("<direct>", "<unknown>", "")


@attrs.frozen
class Entry:
    """One registered implementation.

    ``validate``, when given, receives the dimensions and the spec's options and yields
    problems in words (for example "sinusoidal needs an even d_model"); the builder collects
    them with every other problem before anything is allocated.

    ``check_options`` are the option sets the conformance suite checks it with, besides the
    factory's defaults (for example a small ``tile`` so a tiled kernel runs several tiles).
    """

    kind: str
    name: str
    factory: Factory
    description: str
    provider: Provider
    capabilities: frozenset[str]
    validate: Validator | None = None
    check_options: tuple[Mapping[str, Any], ...] = attrs.field(default=(), eq=False)

    @property
    def id(self) -> str:
        """``kind/name``, the form used in test ids and reports."""
        return f"{self.kind}/{self.name}"

    def options(self) -> dict[str, inspect.Parameter] | None:
        """The options the factory takes (``None`` when it takes any keyword)."""
        injected = set(kind_info(self.kind).injected)
        params = list(inspect.signature(self.factory).parameters.values())[1:]
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        return {p.name: p for p in params if p.name not in injected}

    def option_problems(self, options: Mapping[str, Any], where: str) -> list[str]:
        """Unknown or missing options, each with a fix."""
        accepted = self.options()
        if accepted is None:
            return []
        problems = [
            _unknown_option(self, key, sorted(accepted), where)
            for key in options
            if key not in accepted
        ]
        for key, param in accepted.items():
            if param.default is inspect.Parameter.empty and key not in options:
                problems.append(f"{where}: {self.id} needs option {key!r}; add `{key} = ...`")
            elif key in options:
                problems += value_problems(self, param, options[key], f"{where}.{key}")
        return problems


# Options with these names are sizes, scales or tolerances wherever they appear: zero or
# negative values are meaningless (a plugin's options of the same names are held to it too).
POSITIVE_OPTIONS = frozenset(
    {"eps", "std", "base", "window", "tile", "block", "scale", "temperature"}
)
_SIMPLE = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}


def _allowed_types(annotation: Any) -> tuple[type, ...] | None:
    """The plain types an annotation admits (``int | None`` -> int, NoneType), if all plain."""
    members = typing.get_args(annotation) if typing.get_origin(annotation) in _UNIONS else ()
    members = members or (annotation,)
    if all(m in _SIMPLE or m is type(None) for m in members):
        return tuple(members)
    return None


def _type_problem(param: inspect.Parameter, value: Any) -> str | None:
    allowed = _allowed_types(param.annotation)
    if allowed is None or (value is None and type(None) in allowed):
        return None
    fits = any(
        (isinstance(value, t) and (t is bool or not isinstance(value, bool)))
        or (t is float and isinstance(value, int) and not isinstance(value, bool))
        for t in allowed
    )
    if fits:
        return None
    wanted = " or ".join(_SIMPLE.get(t, "none") for t in allowed)
    return f"must be {wanted}, got {value!r}"


def value_problems(entry: Entry, param: inspect.Parameter, value: Any, where: str) -> list[str]:
    """A value of the wrong type, NaN or infinite, or not positive where it must be."""
    wrong = _type_problem(param, value)
    if wrong:
        return [f"{where}: {entry.id} option {param.name} {wrong}"]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{where}: {entry.id} option {param.name} = {value} must be a finite number"]
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and param.name in POSITIVE_OPTIONS and value <= 0:
        return [f"{where}: {entry.id} option {param.name} = {value} must be above 0"]
    return []


def _unknown_option(entry: Entry, key: str, accepted: list[str], where: str) -> str:
    takes = ", ".join(accepted) if accepted else "no options"
    hint = did_you_mean(key, accepted)
    return f"{where}.{key}: {entry.id} takes no option {key!r}{hint} (it takes: {takes})"


@attrs.frozen
class Preset:
    """A named spec, in dict form, and who provided it."""

    name: str
    spec: Mapping[str, Any] = attrs.field(hash=False)
    description: str
    provider: Provider


@attrs.frozen
class PluginFailure:
    """A plugin that could not be loaded or could not register, and why."""

    plugin: str
    distribution: str
    version: str
    error: str

    def __str__(self) -> str:
        return f"plugin {self.plugin!r} from {self.distribution} {self.version}: {self.error}"


class Registry:
    """Implementations keyed by ``(kind, name)``; see :meth:`register` and :meth:`get`."""

    def __init__(self, provider: Provider = UNKNOWN_PROVIDER) -> None:
        self._entries: dict[tuple[str, str], Entry] = {}
        self._presets: dict[str, Preset] = {}
        self._provider = provider
        self.failures: list[PluginFailure] = []

    def register_preset(
        self, name: str, spec: Mapping[str, Any], *, description: str = ""
    ) -> "Preset":
        """Register a named spec (in its dict form, as ``DecoderSpec.to_dict()`` writes it)."""
        if not _NAME.match(name):
            raise TfsError(f"cannot register preset {name!r}: use lower-case letters, digits, _")
        if name in self._presets:
            first = self._presets[name]
            raise DuplicateComponentError(
                f"preset {name!r} is registered twice: by {first.provider} and by {self._provider}"
            )
        preset = Preset(name, dict(spec), description, self._provider)
        self._presets[name] = preset
        return preset

    def preset(self, name: str) -> "Preset":
        """The preset called ``name``, or an error suggesting the closest."""
        try:
            return self._presets[name]
        except KeyError:
            raise TfsError(unknown_name_message("preset", name, self.preset_names())) from None

    def preset_names(self) -> list[str]:
        """The registered preset names, sorted."""
        return sorted(self._presets)

    def register(
        self,
        kind: str,
        name: str,
        factory: Factory,
        *,
        description: str | None = None,
        capabilities: Iterable[str] = (),
        validate: Validator | None = None,
        check_options: Iterable[Mapping[str, Any]] = (),
    ) -> Entry:
        """Register ``factory`` as the implementation ``name`` of ``kind``.

        ``description`` defaults to the first line of the factory's docstring;
        ``capabilities`` must come from the kind's vocabulary (see ``core.kinds.KINDS``);
        ``check_options`` are extra option sets for the conformance suite to check it with.
        """
        entry = Entry(
            kind=kind,
            name=name,
            factory=factory,
            description=description or _first_line(factory),
            provider=self._provider,
            capabilities=frozenset(capabilities),
            validate=validate,
            check_options=tuple(dict(o) for o in check_options),
        )
        _check_entry(entry)
        self._add(entry)
        return entry

    def get(self, kind: str, name: str) -> Entry:
        """The entry for ``kind``/``name``, or an error suggesting the closest name."""
        kind_info(kind)
        try:
            return self._entries[(kind, name)]
        except KeyError:
            raise UnknownComponentError(kind, name, self.names(kind), self.origins(kind)) from None

    def origins(self, kind: str) -> dict[str, str]:
        """Which distribution provides each of ``kind``'s names that is not a built-in."""
        return {
            e.name: e.provider.distribution
            for e in self.entries(kind)
            if e.provider.plugin != "builtin"
        }

    def names(self, kind: str) -> list[str]:
        """The registered names of ``kind``, sorted."""
        return sorted(name for (k, name) in self._entries if k == kind)

    def entries(self, kind: str | None = None) -> list[Entry]:
        """All entries (of one kind, if given), sorted by kind then name."""
        chosen = (e for e in self._entries.values() if kind is None or e.kind == kind)
        return sorted(chosen, key=lambda e: (e.kind, e.name))

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries())

    def __len__(self) -> int:
        return len(self._entries)

    def merge(self, other: "Registry") -> None:
        """Add every entry of ``other``, all or none: a clash names both providers."""
        clashes = [e for e in other.entries() if (e.kind, e.name) in self._entries]
        preset_clashes = sorted(set(other._presets) & set(self._presets))
        messages = [_clash_message(self._entries[(e.kind, e.name)], e) for e in clashes]
        messages += [
            f"preset {name!r} is registered twice: by {self._presets[name].provider} and by "
            f"{other._presets[name].provider}"
            for name in preset_clashes
        ]
        if messages:
            raise DuplicateComponentError("; ".join(messages))
        self._entries.update(other._entries)
        self._presets.update(other._presets)

    def _add(self, entry: Entry) -> None:
        key = (entry.kind, entry.name)
        if key in self._entries:
            raise DuplicateComponentError(_clash_message(self._entries[key], entry))
        self._entries[key] = entry


def _clash_message(first: Entry, second: Entry) -> str:
    return (
        f"{first.id} is registered twice: by {first.provider} and by {second.provider}; "
        "names are never overridden, so rename one or uninstall one of the two distributions"
    )


def _check_entry(entry: Entry) -> None:
    info = kind_info(entry.kind)
    if not _NAME.match(entry.name):
        raise TfsError(
            f"cannot register {entry.kind} {entry.name!r}: names are lower-case letters, digits "
            "and underscores, starting with a letter (for example 'my_attention')"
        )
    if not callable(entry.factory):
        raise TfsError(f"cannot register {entry.id}: factory {entry.factory!r} is not callable")
    for index, options in enumerate(entry.check_options):
        problems = entry.option_problems(options, f"check_options[{index}]")
        if problems:
            raise TfsError(f"cannot register {entry.id}: " + "; ".join(problems))
    unknown = sorted(entry.capabilities - set(info.capabilities))
    if unknown:
        vocab = ", ".join(sorted(info.capabilities)) or "(none)"
        raise TfsError(
            f"cannot register {entry.id}: unknown capabilities {unknown}; "
            f"kind {entry.kind!r} knows: {vocab}"
        )


def _first_line(factory: Factory) -> str:
    doc = (inspect.getdoc(factory) or "").strip().replace("``", "")
    return doc.splitlines()[0] if doc else ""
