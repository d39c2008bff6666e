"""``tfs check``: run the conformance suite on registered implementations."""

import argparse
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from transformer_from_scratch.cli.args import key_value, positive_int
from transformer_from_scratch.core.kinds import KINDS
from transformer_from_scratch.core.threads import use_threads


def add_commands(sub: Any) -> None:
    """Register ``tfs check``."""
    p = sub.add_parser(
        "check",
        help="run the conformance suite (exit 1 if any check fails)",
        description="Check registered implementations for what their kind promises. Each is "
        "checked with its default options, the option sets it declares, and (kernels declaring "
        "sliding_window) windows of 1, 3 and 1000.",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="kind/name or name (default: all)")
    p.add_argument("--kind", choices=sorted(KINDS), help="only implementations of this kind")
    p.add_argument("--plugin", metavar="DIST", help="only implementations from this distribution")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="check with these options only (repeatable; JSON values)")  # fmt: skip
    p.add_argument("--jobs", type=positive_int, default=1, metavar="N",
                   help="run the implementations in N processes (default 1)")  # fmt: skip
    p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="torch threads per process (default: OMP_NUM_THREADS, else 1; tiny "
                   "models run fastest on one)")  # fmt: skip
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    p.set_defaults(run=run_check)


def parse_options(pairs: list[str]) -> dict[str, Any] | None:
    """``["tile=4", "approximate=tanh"]`` -> ``{"tile": 4, "approximate": "tanh"}``; ``None`` if
    empty."""
    if not pairs:
        return None
    return dict(key_value(pair, "--option", "tile=64") for pair in pairs)


def _run_in_worker(job: tuple[str, str, dict[str, Any], int]) -> list[Any]:
    from transformer_from_scratch import conformance
    from transformer_from_scratch.core.plugins import default_registry

    kind, name, options, threads = job
    use_threads(threads)
    registry = default_registry()
    subject = conformance.Subject(registry.get(kind, name), registry, options)
    return conformance.run([subject]).results


def run_check(args: argparse.Namespace) -> int:
    """Run the selection, print the table, write JSON if asked; 1 on any failure."""
    from transformer_from_scratch import conformance

    threads = use_threads(args.threads, one_is_best=True)
    subjects = conformance.select(
        names=args.names,
        kind=args.kind,
        distribution=args.plugin,
        options=parse_options(args.option),
    )
    if args.jobs > 1 and len(subjects) > 1:
        jobs = [(s.kind, s.entry.name, dict(s.options), threads) for s in subjects]
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
            results = [r for rs in pool.map(_run_in_worker, jobs) for r in rs]
        report = conformance.Report(results, order=[c.name for c in conformance.CHECKS])
    else:
        report = conformance.run(subjects)
    print(report)
    if args.json:
        args.json.write_text(report.to_json() + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0 if report.ok else 1
