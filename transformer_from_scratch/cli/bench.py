"""``tfs bench attention`` and ``tfs bench train``."""

import argparse
import sys
from pathlib import Path
from typing import Any

from transformer_from_scratch.cli.args import key_value, positive_int
from transformer_from_scratch.core.errors import TfsError
from transformer_from_scratch.core.spec import DecoderSpec


def add_commands(sub: Any) -> None:
    """Register ``tfs bench``."""
    bench = sub.add_parser("bench", help="benchmark attention kernels or a training step")
    kinds = bench.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    a = kinds.add_parser("attention", help="every attention kernel across sequence lengths")
    a.add_argument("--kernels", help="comma-separated kernel names (default: all registered)")
    a.add_argument(
        "--seq", default="256,1024,4096", help="comma-separated lengths (default: %(default)s)"
    )
    a.add_argument("--batch", type=positive_int, default=1)
    a.add_argument("--heads", type=positive_int, default=8)
    a.add_argument("--d-head", type=positive_int, default=64)
    a.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    a.add_argument("--device", default="cpu")
    a.add_argument("--mode", choices=["fwd", "fwd+bwd", "both"], default="both")
    a.add_argument("--baseline", default="materialized", help="kernel the ratios compare against")
    a.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KERNEL.OPTION=VALUE",
        help="a kernel option, e.g. --option flash.tile=512 (repeatable)",
    )
    a.add_argument("--repeats", type=positive_int, default=5)
    a.add_argument("--json", type=Path, metavar="PATH")
    a.add_argument(
        "--plot", type=Path, metavar="PATH", help="PNG of time and memory (needs matplotlib)"
    )
    a.set_defaults(run=run_attention)
    t = kinds.add_parser("train", help="training tokens/s and MFU, beside a plain-PyTorch GPT")
    t.add_argument("--spec", default="small", metavar="FILE_OR_PRESET")
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="change a spec field, e.g. --set d_model=384 (repeatable)",
    )
    t.add_argument("--kernel", help="attention kernel to use (default: the spec's)")
    t.add_argument("--batch-size", type=positive_int, default=16)
    t.add_argument(
        "--accumulate",
        type=positive_int,
        default=1,
        metavar="N",
        help="batches per optimiser step (gradient accumulation; nanoGPT's GPT-2 run uses 40)",
    )
    t.add_argument("--device", default="cpu")
    t.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    t.add_argument("--compile", action="store_true")
    t.add_argument(
        "--tf32",
        action="store_true",
        help="let float32 matrix products on a GPU use TF32, as nanoGPT does (no effect on a CPU)",
    )
    t.add_argument("--no-reference", action="store_true", help="time the decoder alone")
    t.add_argument("--rounds", type=positive_int, default=3)
    t.add_argument("--profile", action="store_true", help="also show where a step's time goes")
    t.set_defaults(run=run_train)


def _cases(args: argparse.Namespace) -> list[Any]:
    from transformer_from_scratch.bench.attention import Case, default_kernels
    from transformer_from_scratch.core.plugins import default_registry

    registry = default_registry()
    names = args.kernels.split(",") if args.kernels else default_kernels(registry, args.device)
    for name in names:
        registry.get("attention_kernel", name)
    lengths = [int(x) for x in args.seq.split(",")]
    options = _kernel_options(args.option)
    modes = {"fwd": [False], "fwd+bwd": [True], "both": [False, True]}[args.mode]
    return [
        Case(
            name,
            n,
            args.batch,
            args.heads,
            args.d_head,
            args.dtype,
            args.device,
            backward,
            tuple(options.get(name, {}).items()),
        )
        for backward in modes
        for n in lengths
        for name in names
    ]


def _kernel_options(items: list[str]) -> dict[str, dict[str, Any]]:
    options: dict[str, dict[str, Any]] = {}
    for item in items:
        target, value = key_value(item, "--option", "flash.tile=512", "KERNEL.OPTION=VALUE")
        kernel, _, key = target.partition(".")
        if not (kernel and key):
            raise TfsError(f"--option {item!r}: write KERNEL.OPTION=VALUE, e.g. flash.tile=512")
        options.setdefault(kernel, {})[key] = value
    return options


def run_attention(args: argparse.Namespace) -> int:
    """Run every case, print the tables; write JSON and a plot when asked."""
    from transformer_from_scratch.bench import report
    from transformer_from_scratch.bench.attention import memory_method, run_case, run_isolated

    isolate = not args.device.startswith("cuda")
    results = []
    for case in _cases(args):
        print(f"  {case.kernel} {case.mode} {case.length} ...", file=sys.stderr, flush=True)
        results.append(
            run_isolated(case, args.repeats) if isolate else run_case(case, args.repeats)
        )
    info = report.machine(args.device)
    print(
        f"attention kernels: batch {args.batch}, {args.heads} heads of {args.d_head}, {args.dtype} "
        f"on {info.get('gpu', info['cpu'])} ({args.device}); memory: {memory_method(args.device)}\n"
    )
    print(report.tables(results, args.baseline))
    if args.json:
        report.write_json(args.json, results, args.device, args.baseline)
    if args.plot:
        report.plot(
            args.plot, results, f"attention kernels, {args.dtype}, {info.get('gpu', info['cpu'])}"
        )
    return 0


def _spec(args: argparse.Namespace) -> Any:
    from transformer_from_scratch.cli.components import resolve_spec

    spec = resolve_spec(args.spec)
    changes = dict(key_value(item, "--set", "d_model=384", "FIELD=VALUE") for item in args.set)
    if changes:  # through from_dict: an unknown field gets "did you mean", not a traceback
        spec = DecoderSpec.from_dict({**spec.to_dict(), **changes}, source="--set")
    return spec.evolve(attention_kernel=args.kernel) if args.kernel else spec


def _accumulated(accumulate: int) -> str:
    return f" x {accumulate} per optimiser step" if accumulate > 1 else ""


def run_train(args: argparse.Namespace) -> int:
    """Time training steps of the decoder (and the reference) and print tokens/s and MFU."""
    import torch

    from transformer_from_scratch.bench.flops import training_flops_per_token
    from transformer_from_scratch.bench.report import machine
    from transformer_from_scratch.bench.train import compare, profile
    from transformer_from_scratch.core.builder import build_decoder

    spec = _spec(args)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    results, peak = compare(
        spec,
        batch=args.batch_size,
        device=device,
        dtype=dtype,
        compile_models=args.compile,
        reference=not args.no_reference,
        rounds=args.rounds,
        accumulate=args.accumulate,
    )
    with torch.device("meta"):
        per_token = training_flops_per_token(build_decoder(spec), spec.n_ctx)
    info = machine(args.device)
    print(
        f"{spec.n_layers} layers, d_model {spec.d_model}, {spec.n_heads} heads, "
        f"context {spec.n_ctx}, batch {args.batch_size}{_accumulated(args.accumulate)}, "
        f"vocab {spec.d_vocab}, kernel "
        f"{spec.components.attention_kernel}, "
        f"{args.dtype}{', compiled' if args.compile else ''}{', TF32' if args.tf32 else ''} on "
        f"{info.get('gpu', info['cpu'])}"
    )
    print(
        f"FLOPs per token {per_token / 1e6:,.1f} M (6N + 12LHQT); "
        f"measured peak {peak / 1e12:,.2f} TFLOP/s\n"
    )
    print(f"  {'model':14} {'tokens/s':>12} {'step ms':>10} {'MFU':>7} {'vs reference':>13}")
    for r in results:
        ratio = "-" if r.vs_reference is None else f"{r.vs_reference:.2f}x"
        print(
            f"  {r.name:14} {r.tokens_per_s:12,.0f} {r.step_s * 1e3:10.1f} {r.mfu:7.1%} {ratio:>13}"
        )
    if args.profile:
        print("\nwhere one from-scratch step spends its time:\n")
        print(profile(spec, batch=args.batch_size, device=device, dtype=dtype))
    return 0
