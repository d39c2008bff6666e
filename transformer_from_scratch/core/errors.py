"""The package's exception types.

Every error here is written for a person: it says what was wrong, where (a spec field path, a
plugin, a file) and what to do about it. The command line prints the message alone (exit code 2);
``--debug`` adds the traceback.
"""

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


class TfsError(Exception):
    """Base class of every error this package raises on purpose."""


class SpecError(TfsError, ValueError):
    """A spec (or a spec-shaped dict, TOML or JSON) has one or more problems, all listed."""

    def __init__(
        self,
        problems: Sequence[str],
        *,
        source: str = "spec",
        data: Mapping[str, Any] | None = None,
    ) -> None:
        self.problems = list(problems)
        self.source = source
        self.data = data
        count = len(self.problems)
        header = f"{source} has {count} problem{'s' if count != 1 else ''}:"
        super().__init__("\n".join([header, *(f"  - {p}" for p in self.problems)]))


class UnknownComponentError(TfsError, LookupError):
    """No implementation of that kind is registered under that name."""

    def __init__(
        self, kind: str, name: str, registered: Iterable[str], origins: Mapping[str, str] = {}
    ) -> None:
        self.kind, self.name = kind, name
        self.registered = sorted(registered)
        super().__init__(unknown_name_message(f"{kind}", name, self.registered, origins))


class DuplicateComponentError(TfsError):
    """Two providers registered the same kind and name."""


class PluginError(TfsError):
    """A plugin failed to load or to register (raised only in strict mode)."""


class IncompatibleComponentsError(SpecError):
    """The spec names parts that cannot work together; raised before any weight is allocated."""


class Interrupted(TfsError):
    """A run stopped by a signal after saving where it was; the CLI exits with ``code`` (130
    for Ctrl-C, 143 for SIGTERM: 128 + the signal's number, as a shell reports it)."""

    def __init__(self, message: str, code: int = 130) -> None:
        super().__init__(message)
        self.code = code


class ComponentError(TfsError):
    """A built component broke its kind's contract (found by the dry run after building)."""


class CheckpointError(TfsError):
    """A checkpoint file is missing, damaged, tampered with, or names parts not installed."""


def did_you_mean(name: str, candidates: Iterable[str], origins: Mapping[str, str] = {}) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest candidate (with where it comes from, if
    ``origins`` names it), or an empty string."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    if not close:
        return ""
    origin = f" (from {origins[close[0]]})" if close[0] in origins else ""
    return f"; did you mean {close[0]!r}{origin}?"


def unknown_name_message(
    what: str, name: str, registered: Sequence[str], origins: Mapping[str, str] = {}
) -> str:
    """The message for an unknown name: the name, a suggestion and what exists; ``origins``
    maps names to the distribution that provides them (shown for plugins' names)."""
    shown = [f"{n} ({origins[n]})" if n in origins else n for n in registered]
    listing = ", ".join(shown) if shown else "(none)"
    hint = did_you_mean(name, registered, origins) or ";"
    return f"unknown {what} {name!r}{hint} registered: {listing}"
