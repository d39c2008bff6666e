"""Argument types shared by the subcommands: refused by argparse with a clear message."""

import argparse
import sys
from typing import Any

from transformer_from_scratch.core.errors import TfsError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def positive_int(text: str) -> int:
    """A whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def add_threads(parser: argparse.ArgumentParser, default_help: str) -> None:
    """Give a (sub)command ``--threads N``."""
    if any("--threads" in a.option_strings for a in parser._actions):
        return
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help=f"torch threads here (default: {default_help})")  # fmt: skip


def each_command(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    """Every leaf (sub)command of ``parser``, with its path (``"spec show"``)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                below = each_command(sub)
                found += [(f"{name} {p}".strip(), s) for p, s in below] or [(name, sub)]
    return found


def key_value(item: str, flag: str, example: str, form: str = "KEY=VALUE") -> tuple[str, Any]:
    """``KEY=VALUE`` from the command line; the value read as TOML (``4``, ``true``, ``"x"``),
    else kept as the text given."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip() or not text:
        raise TfsError(f"{flag} {item!r}: write {form}, for example {flag} {example}")
    try:
        return key.strip(), tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return key.strip(), text
