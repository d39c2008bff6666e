"""``tfs study run|work|report``: which variant is better, at a fixed budget, over seeds."""

import argparse
from pathlib import Path
from typing import Any

from transformer_from_scratch.core.errors import TfsError


def add_commands(sub: Any) -> None:
    """Register ``study`` and its actions."""
    study = sub.add_parser("study", help="compare variants by quality: trials over seeds and "
                           "learning rates, through Optuna").add_subparsers(
        dest="study_command", required=True, metavar="ACTION")  # fmt: skip
    run = study.add_parser("run", help="run (or resume) a study file, then report")
    run.add_argument("file", type=Path, metavar="STUDY_TOML")
    run.add_argument("--out", type=Path, metavar="DIR",
                     help="the study folder (default: runs/studies/NAME)")  # fmt: skip
    _storage(run)
    run.set_defaults(run=run_study)
    work = study.add_parser("work", help="an extra worker on a study folder (or shared storage)")
    work.add_argument("folder", type=Path, metavar="DIR")
    _storage(work)
    work.set_defaults(run=run_work)
    report = study.add_parser("report", help="the table, JSON, Markdown and plots of a study")
    report.add_argument("folder", type=Path, metavar="DIR")
    _storage(report)
    report.set_defaults(run=run_report)


def _storage(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", metavar="URL",
                        help="Optuna storage shared by workers, e.g. postgresql://host/db "
                        "(default: sqlite in the study folder)")  # fmt: skip


def _folder(path: Path) -> Path:
    from transformer_from_scratch.study.runner import PLAN_FILE

    if not (path / PLAN_FILE).is_file():
        raise TfsError(f"{path} is not a study folder (no {PLAN_FILE}); start one with "
                       "tfs study run STUDY_TOML")  # fmt: skip
    return path


def run_study(args: argparse.Namespace) -> int:
    """Prepare the folder, work through it, report."""
    from transformer_from_scratch.study import runner

    folder = runner.prepare(args.file, args.out)
    print(f"study folder: {folder}")
    runner.work(folder, args.storage)
    return _report(folder, args.storage)


def run_work(args: argparse.Namespace) -> int:
    """Work on an existing study until no cell is left."""
    from transformer_from_scratch.study import runner

    done = runner.work(_folder(args.folder), args.storage)
    print(f"this worker completed {done} trial(s)")
    return 0


def run_report(args: argparse.Namespace) -> int:
    """Write and print the report of what has finished so far."""
    return _report(_folder(args.folder), args.storage)


def _report(folder: Path, storage: str | None) -> int:
    from transformer_from_scratch.study import report, runner

    plan = runner.folder_plan(folder)
    records = runner.trial_records(folder, storage)
    with runner.quiet_optuna():
        states = runner.states(runner.open_study(folder, storage), plan)
    summary = report.summary(plan, records, states)
    print(report.markdown(summary))
    if not records:
        print("no trial has finished yet")
        return 0
    for path in report.write(folder, summary, records, plan):
        print(f"wrote {path}")
    return 0
