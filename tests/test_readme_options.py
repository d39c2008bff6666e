"""The README's option lists cannot drift from the parser: every option of every command is named."""

from pathlib import Path

import pytest

from transformer_from_scratch.cli import build_parser
from transformer_from_scratch.cli.args import each_command

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
GENERIC = {"--help", "--debug", "--threads"}  # every command has them; the README says so once
COMMANDS = dict(each_command(build_parser()))


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_option_is_in_the_readme(path: str) -> None:
    assert f"tfs {path}" in README, f"the README's command table lacks `tfs {path}`"
    options = {o for a in COMMANDS[path]._actions for o in a.option_strings if o.startswith("--")}
    missing = sorted(
        o
        for o in options - GENERIC
        if f"`{o}" not in README and f" [{o}" not in README and f" {o} " not in README
    )
    assert not missing, f"add these options of `tfs {path}` to the README: {missing}"


def test_generic_options_are_described_once() -> None:
    for option in GENERIC - {"--help"}:
        assert f"`{option}" in README or f"{option}" in README, option
