"""The README's option lists cannot drift from the parser: every option of `tfs train` is named."""

from pathlib import Path

from transformer_from_scratch.cli import build_parser
from transformer_from_scratch.cli.args import each_command

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
GENERIC = {"--help", "--debug"}


def test_every_train_option_is_in_the_readme() -> None:
    [train] = [parser for path, parser in each_command(build_parser()) if path == "train"]
    options = {o for a in train._actions for o in a.option_strings if o.startswith("--")}
    missing = sorted(o for o in options - GENERIC if f"`{o}" not in README)
    assert not missing, f"add these to the README's `tfs train` options: {missing}"
