"""``tfs list``, ``tfs spec show|diff``, ``tfs build``: what is registered, what a spec makes."""

import argparse
from pathlib import Path
from typing import Any

import torch

from transformer_from_scratch.cli._table import format_table
from transformer_from_scratch.cli.args import positive_int
from transformer_from_scratch.core import memory
from transformer_from_scratch.core.builder import build_decoder, count_parameters
from transformer_from_scratch.core.errors import TfsError, did_you_mean
from transformer_from_scratch.core.plugins import default_registry
from transformer_from_scratch.core.spec import DecoderSpec
from transformer_from_scratch.core.validate import load_spec


def add_commands(sub: Any) -> None:
    """Register this module's subcommands."""
    p = sub.add_parser("list", help="list registered components, presets and plugin failures")
    p.set_defaults(run=run_list)
    spec = sub.add_parser("spec", help="show or compare specs").add_subparsers(
        dest="spec_command", required=True, metavar="ACTION"
    )
    show = spec.add_parser("show", help="print a preset or spec file as TOML")
    show.add_argument("spec", metavar="SPEC_OR_PRESET")
    show.add_argument("--memory", action="store_true",
                      help="print the memory it needs instead (nothing is allocated)")  # fmt: skip
    show.add_argument("--batch-size", type=int, default=16, help="for --memory (default 16)")
    show.add_argument("--context", type=int, help="for --memory (default: n_ctx)")
    show.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    show.add_argument("--parallel", choices=memory.PARALLEL, default="ddp",
                      help="for --memory: a whole copy each (ddp) or sharded (fsdp)")  # fmt: skip
    show.add_argument("--world-size", type=positive_int, default=1, metavar="N",
                      help="for --memory: devices sharing the model (default 1)")  # fmt: skip
    show.set_defaults(run=run_spec_show)
    diff = spec.add_parser("diff", help="show the fields where two specs differ")
    diff.add_argument("first", metavar="A")
    diff.add_argument("second", metavar="B")
    diff.set_defaults(run=run_spec_diff)
    build = sub.add_parser("build", help="build a decoder and print parameters per component")
    build.add_argument("spec", metavar="SPEC_OR_PRESET")
    build.set_defaults(run=run_build)


def resolve_spec(text: str) -> DecoderSpec:
    """A spec from a file path (TOML/JSON) or a preset name."""
    registry = default_registry()
    if Path(text).is_file():
        return load_spec(text, registry)
    if text in registry.preset_names():
        return DecoderSpec.preset(text, registry)
    presets = registry.preset_names()
    raise TfsError(
        f"{text!r} is neither a spec file nor a preset{did_you_mean(text, presets)} "
        f"(presets: {', '.join(presets)})"
    )


def run_list(args: argparse.Namespace) -> int:
    """Print the components table, the presets and any plugin failures."""
    registry = default_registry()
    rows = [
        (e.kind, e.name, ", ".join(sorted(e.capabilities)), f"{e.provider.distribution} "
         f"{e.provider.version}", e.description)
        for e in registry.entries()
    ]  # fmt: skip
    print(format_table(["kind", "name", "capabilities", "provider", "description"], rows))
    print()
    presets = [(p.name, f"{p.provider.distribution}", p.description) for p in
               (registry.preset(n) for n in registry.preset_names())]  # fmt: skip
    print(format_table(["preset", "provider", "description"], presets))
    if registry.failures:
        print("\nplugins that failed to load:")
        for failure in registry.failures:
            print(f"  {failure}")
    return 0


def run_spec_show(args: argparse.Namespace) -> int:
    """Print a spec as TOML, or (``--memory``) what it needs to infer and to train."""
    spec = resolve_spec(args.spec)
    if not args.memory:
        print(spec.to_toml(), end="")
        return 0
    if args.batch_size < 1 or (args.context is not None and not 1 <= args.context <= spec.n_ctx):
        raise TfsError(f"--batch-size must be at least 1 and --context within 1..{spec.n_ctx}")
    count = count_parameters(spec)
    if count is None:
        raise TfsError(f"{args.spec}: a part cannot be built on the meta device to be counted")
    infer = memory.estimate(spec, count.total)
    train = memory.estimate(spec, count.total, batch=args.batch_size, context=args.context,
                            dtype=args.dtype, parallel=args.parallel, world_size=args.world_size,
                            block_parameters=count.per_layer)  # fmt: skip
    context = args.context or spec.n_ctx
    where = "one device" if args.world_size == 1 else f"each of {args.world_size} devices"
    print(f"{args.spec}: inference (weights only, one device)\n{infer.table()}\n")
    print(f"training, {args.parallel}, {where}: batch {args.batch_size} x context {context} per "
          f"device, {args.dtype}, AdamW\n{train.table()}")  # fmt: skip
    return 0


def run_spec_diff(args: argparse.Namespace) -> int:
    """Print each field where the two specs differ; exit 1 if they differ (like diff)."""
    first, second = resolve_spec(args.first), resolve_spec(args.second)
    changes = first.differences(second)
    if not changes:
        print("the specs are identical")
        return 0
    print(format_table(["field", args.first, args.second], changes))
    return 1


def run_build(args: argparse.Namespace) -> int:
    """Build the decoder and print parameter counts per kind."""
    spec = resolve_spec(args.spec)
    with torch.device("meta"):  # count parameters without allocating them
        decoder = build_decoder(spec)
    counts = decoder.parameter_counts()
    rows = [(kind, f"{n:,}") for kind, n in counts.items()]
    rows.append(("total", f"{sum(counts.values()):,}"))
    names = ", ".join(f"{k}={c}" for k, c in spec.components.items())
    print(f"built {names}")
    for override in spec.layers:
        chosen = (
            f"blocks {list(override.indices)}"
            if override.indices is not None
            else f"every {override.every} blocks from block {override.offset}"
        )
        parts = ", ".join(f"{k}={c}" for k, c in override.components.items())
        print(f"  then, for {chosen}: {parts}")
    print()
    print(format_table(["kind", "parameters"], rows))
    return 0
