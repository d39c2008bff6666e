"""``tfs``: the command line. Each subcommand lives in its own module and registers a parser.

Bad input exits with code 2 and a one-line (or one-list) error; ``--debug`` shows the traceback.
"""

import argparse
import sys
from collections.abc import Sequence

from transformer_from_scratch.cli import (
    bench,
    check,
    components,
    export,
    inspect,
    new_plugin,
    study,
    train,
)
from transformer_from_scratch.cli.args import add_threads, each_command
from transformer_from_scratch.core.allocator import keep_freed_memory
from transformer_from_scratch.core.errors import Interrupted, TfsError
from transformer_from_scratch.core.threads import use_threads

COMMANDS = (train, components, check, bench, inspect, export, study, new_plugin)


def build_parser() -> argparse.ArgumentParser:
    """The ``tfs`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="tfs", description="A decoder-only transformer built from swappable components."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_commands(sub)
    for path, command in each_command(parser):
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show tracebacks on errors")  # fmt: skip
        tiny = path.startswith("check")
        add_threads(command, "TFS_THREADS or OMP_NUM_THREADS, else 1" if tiny else
                    "TFS_THREADS or OMP_NUM_THREADS, else the idle cores")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tfs`` with ``argv``; returns the exit code."""
    args = build_parser().parse_args(argv)
    keep_freed_memory()  # (training steps would fault their memory back in, step after step)
    try:
        use_threads(args.threads, one_is_best=args.command == "check")
        code: int = args.run(args)
    except Interrupted as stop:
        if str(stop):  # (under torchrun, only the main process tells)
            print(f"tfs {args.command}: {stop}", file=sys.stderr)
        return stop.code
    except (TfsError, OSError) as err:
        if args.debug:
            raise
        print(f"tfs {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
