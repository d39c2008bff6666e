"""``tfs check``: run the conformance suite on registered implementations."""

import argparse
from pathlib import Path
from typing import Any

from transformer_from_scratch.core.kinds import KINDS


def add_commands(sub: Any) -> None:
    """Register ``tfs check``."""
    p = sub.add_parser(
        "check",
        help="run the conformance suite (exit 1 if any check fails)",
        description="Check registered implementations for what their kind promises.",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="kind/name or name (default: all)")
    p.add_argument("--kind", choices=sorted(KINDS), help="only implementations of this kind")
    p.add_argument("--plugin", metavar="DIST", help="only implementations from this distribution")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    p.set_defaults(run=run_check)


def run_check(args: argparse.Namespace) -> int:
    """Run the selection, print the table, write JSON if asked; 1 on any failure."""
    from transformer_from_scratch import conformance

    subjects = conformance.select(names=args.names, kind=args.kind, distribution=args.plugin)
    report = conformance.run(subjects)
    print(report)
    if args.json:
        args.json.write_text(report.to_json() + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0 if report.ok else 1
