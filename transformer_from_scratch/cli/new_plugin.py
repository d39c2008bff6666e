"""``tfs new-plugin``: write a plugin distribution with one component to fill in."""

import argparse
from pathlib import Path
from typing import Any

from transformer_from_scratch import scaffold
from transformer_from_scratch.core.kinds import KINDS


def add_commands(sub: Any) -> None:
    """Register ``new-plugin``."""
    p = sub.add_parser(
        "new-plugin",
        help="write a plugin distribution: pyproject, a component to fill in, its tests, README",
    )
    p.add_argument("name", metavar="NAME", help="the distribution's name, e.g. tfs-my-kernel")
    p.add_argument("--kind", required=True, choices=list(KINDS), help="the component's kind")
    p.add_argument("--component", metavar="NAME",
                   help="its registered name (default: NAME less 'tfs-', '-' as '_')")  # fmt: skip
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="where to write it (default: ./NAME); must be new or empty")  # fmt: skip
    p.set_defaults(run=run_new_plugin)


def run_new_plugin(args: argparse.Namespace) -> int:
    """Write the files and say what to do next."""
    plan = scaffold.plan(args.name, args.kind, args.component, args.out)
    written = scaffold.write(plan)
    print(f"wrote {plan.kind}/{plan.component} in {plan.distribution} ({plan.out}):")
    for path in written:
        print(f"  {path}")
    component = f"{plan.out}/src/{plan.package}/{plan.component}.py"
    print(
        f"next: fill in {component} (its docstring says what each method takes and returns;\n"
        "      until then it raises 'fill in ...' and the tests fail saying so), then\n"
        f'      pip install -e "{plan.out}[test]" && pytest {plan.out}'
    )
    return 0
