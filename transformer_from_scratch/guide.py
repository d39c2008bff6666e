"""The README's generated parts: each kind's contract, the dimensions, the helpers, the built-ins.

They are rendered from the code (``core/kinds.py``, ``core/dims.py``, ``core/functional.py``
and the registry), so the README cannot drift from it; a test compares them. After changing a
contract or a built-in, rewrite them with::

    python -m transformer_from_scratch.guide --write README.md
"""

import argparse
import inspect
import re
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path

import attrs

from transformer_from_scratch.conformance.suite import CHECKS
from transformer_from_scratch.core import functional, shapes
from transformer_from_scratch.core.dims import Dims
from transformer_from_scratch.core.kinds import CONTRACTS, DECODER_HOOKS, KINDS, KindInfo
from transformer_from_scratch.core.plugins import load_registry
from transformer_from_scratch.core.registry import Entry, Registry

# How each injected part is typed in a factory's signature.
INJECTED_TYPES = {
    "kernel": "AttentionKernel",
    "attention": "nn.Module",
    "mlp": "nn.Module",
    "make_norm": "Callable[[], nn.Module]",
    "embedding": "nn.Module",
}
_ALIASES = {id(getattr(shapes, name)): name for name in shapes.__all__}
_BEGIN = "<!-- generated: {} (python -m transformer_from_scratch.guide --write README.md) -->"
_END = "<!-- end generated: {} -->"


def type_name(annotation: object) -> str:
    """An annotation as written in the source: shape aliases by name, unions with ``|``."""
    if id(annotation) in _ALIASES:
        return _ALIASES[id(annotation)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in typing.get_args(annotation))
    if annotation is type(None) or annotation is None:
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def method_names(kind: str) -> list[str]:
    """The methods an implementation of ``kind`` writes (``forward`` for a callable)."""
    return ["embed", "rotate", "score_bias"] if kind == "positional" else ["forward"]


def method_source(kind: str, method: str) -> str:
    """``def method(self, ...) -> ...:`` with the contract's exact parameters and types."""
    contract = CONTRACTS[kind]
    function = getattr(contract, "__call__" if method == "forward" else method)
    signature = inspect.signature(function)
    parts: list[str] = []
    for param in signature.parameters.values():
        if param.kind is inspect.Parameter.KEYWORD_ONLY and "*" not in parts:
            parts.append("*")
        if param.name == "self":
            parts.append("self")
            continue
        text = f"{param.name}: {type_name(param.annotation)}"
        if param.default is not inspect.Parameter.empty:
            text += f" = {param.default!r}"
        parts.append(text)
    returns = type_name(signature.return_annotation)
    return f"def {method}({', '.join(parts)}) -> {returns}:"


def factory_source(info: KindInfo) -> str:
    """``def __init__(self, dims: Dims, <injected>) -> None:``; the author adds options."""
    injected = [f"{name}: {INJECTED_TYPES[name]}" for name in info.injected]
    params = ", ".join(["self", "dims: Dims", *injected])
    return f"def __init__({params}) -> None:  # + your options: keyword arguments with defaults"


def _paragraph(text: str) -> str:
    return " ".join(text.split())


def render_contract(info: KindInfo) -> str:
    """One kind's section of the plugin guide."""
    code = [factory_source(info)] + [method_source(info.name, m) for m in method_names(info.name)]
    lines = [f"#### `{info.name}`", "", "```python", *code, "```", "", _paragraph(info.guide)]
    if info.hooks:
        lines += [
            "",
            "Hook points it owes (`self.<name> = HookPoint()`, fired as `x = self.<name>(x)`):",
            "",
        ]
        lines += [f"- `{name}` `[{layout}]`" for name, layout in info.hooks.items()]
    if info.capabilities:
        lines += ["", "Capabilities it may declare:", ""]
        lines += [f"- `{name}`: {meaning}" for name, meaning in info.capabilities.items()]
    return "\n".join(lines)


def render_contracts() -> str:
    """Every kind's contract, in the decoder's order."""
    return "\n\n".join(render_contract(info) for info in KINDS.values())


def render_hooks() -> str:
    """The hook points every decoder fires around its parts, and the ones each kind owes."""
    rows = ["| hook point | layout | fired by |", "| --- | --- | --- |"]
    rows += [f"| `{name}` | `[{layout}]` | the decoder |" for name, layout in DECODER_HOOKS.items()]
    paths = {"attention": "blocks.{i}.attn.", "mlp": "blocks.{i}.mlp.", "block": "blocks.{i}.",
             "norm": "{blocks.{i}.ln1,blocks.{i}.ln2,ln_final}."}  # fmt: skip
    for info in KINDS.values():
        for name, layout in info.hooks.items():
            rows.append(
                f"| `{paths.get(info.name, '')}{name}` | `[{layout}]` | each `{info.name}` |"
            )
    return "\n".join(rows)


def render_dims() -> str:
    """The fields of :class:`Dims`, the record every factory receives first."""
    rows = [f"| `{f.name}` | {f.metadata['doc']} |" for f in attrs.fields(Dims)]
    return "\n".join(["| field | meaning |", "| --- | --- |", *rows])


def _first_line(obj: object) -> str:
    doc = inspect.getdoc(obj) or ""
    return markdown(doc.split("\n\n")[0].replace("\n", " "))


def markdown(text: str) -> str:
    """reStructuredText's double backticks as Markdown's single ones; pipes escaped for tables."""
    return text.replace("``", "`").replace("|", "\\|")


def render_helpers() -> str:
    """The helpers in ``core`` a plugin may use."""
    rows = [
        f"| `{name}` | {_first_line(getattr(functional, name))} |"
        for name in functional.PLUGIN_HELPERS
    ]
    table = ["| `transformer_from_scratch.core.functional.` | what |", "| --- | --- |", *rows]
    aliases = ", ".join(f"`{name}`" for name in sorted(shapes.__all__))
    return "\n".join(
        [
            *table,
            "",
            f"Shape annotations (`transformer_from_scratch.core.shapes`): {aliases}. "
            "`Dims`, `LayerCache`, `PositionalEncoding`, `Registry` and `hookimpl` come from "
            "`transformer_from_scratch`.",
        ]
    )


def _options(entry: Entry) -> str:
    options = entry.options()
    if options is None:
        return "any"
    return ", ".join(
        f"`{name}`" if p.default is inspect.Parameter.empty else f"`{name}={p.default!r}`"
        for name, p in options.items()
    )


def _builtins(registry: Registry, kind: str) -> list[Entry]:
    return [e for e in registry.entries(kind) if e.provider.plugin == "builtin"]


def render_kinds(registry: Registry) -> str:
    """One row per kind: its contract, what it is injected, its built-ins."""
    rows = ["| kind | contract | injected | built-ins |", "| --- | --- | --- | --- |"]
    for info in KINDS.values():
        injected = ", ".join(f"`{name}`" for name in info.injected)
        names = ", ".join(f"`{e.name}`" for e in _builtins(registry, info.name))
        rows.append(f"| `{info.name}` | {markdown(info.contract)} | {injected} | {names} |")
    return "\n".join(rows)


def render_builtins(registry: Registry) -> str:
    """One row per built-in: what it is (its docstring's first line), options, capabilities."""
    rows = ["| kind / name | what | options (defaults) | capabilities |", "| --- " * 4 + "|"]
    for info in KINDS.values():
        for entry in _builtins(registry, info.name):
            capabilities = ", ".join(f"`{c}`" for c in sorted(entry.capabilities))
            what = markdown(entry.description)
            rows.append(f"| `{entry.id}` | {what} | {_options(entry)} | {capabilities} |")
    return "\n".join(rows)


RECORDED_CHECKS = Path(__file__).parent.parent / "benchmarks" / "results" / "check_cpu.json"


def render_checks() -> str:
    """The suite's checks, numbered as ``tfs check`` numbers its columns."""
    rows = ["| # | check | applies to | proves |", "| --- | --- | --- | --- |"]
    for number, check in enumerate(CHECKS, start=1):
        kinds = (
            "every kind"
            if check.kinds == frozenset(KINDS)
            else ", ".join(f"`{kind}`" for kind in KINDS if kind in check.kinds)
        )
        learning = " (learning: once per implementation)" if check.learning else ""
        rows.append(
            f"| {number} | `{check.name}` | {kinds} | {markdown(check.description)}{learning} |"
        )
    return "\n".join(rows)


def render_check_counts(path: Path = RECORDED_CHECKS) -> str:
    """The recorded ``tfs check --json`` run, in one sentence."""
    import json

    recorded = json.loads(path.read_text(encoding="utf-8"))
    counts = recorded["counts"]
    rows = len({r["implementation"] for r in recorded["results"]})
    parts = [f"{n:,} {name}" for name, n in (("passed", counts["pass"]), ("failed", counts["FAIL"]),
             ("not applicable", counts["n/a"])) if n]  # fmt: skip
    return (
        f"For the built-ins and the example plugin, `tfs check` runs {len(recorded['results']):,} "
        f"checks over {rows} rows (implementations and option sets): {', '.join(parts)} "
        f"(recorded in `benchmarks/results/{path.name}`; a test keeps its checks and rows those "
        "of the code)."
    )


def render_sharded_memory(registry: Registry) -> str:
    """What `llama` and `mistral` need per GPU to train, by parallel mode and world size."""
    from transformer_from_scratch.core import memory
    from transformer_from_scratch.core.builder import count_parameters
    from transformer_from_scratch.core.spec import DecoderSpec

    rows = ["| preset | devices | weights + gradients + AdamW per device | activations (batch 1 x "
            "4096, bf16) | total per device |", "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for name in ("llama", "mistral"):
        spec = DecoderSpec.preset(name, registry)
        count = count_parameters(spec, registry)
        assert count is not None
        for mode, world in (("ddp", 1), ("fsdp", 8), ("fsdp", 16), ("fsdp", 64)):
            need = memory.estimate(spec, count.total, batch=1, context=4096, dtype="bfloat16",
                                   parallel=mode, world_size=world,
                                   block_parameters=count.per_layer)  # fmt: skip
            states = need.total - need.activations
            where = "1 (a whole copy)" if world == 1 else f"{world}, fsdp"
            rows.append(f"| `{name}` | {where} | {states / memory.GiB:,.1f} GiB | "
                        f"{need.activations / memory.GiB:,.1f} GiB | "
                        f"{need.total / memory.GiB:,.1f} GiB |")  # fmt: skip
    return "\n".join(rows)


def sections(registry: Registry | None = None) -> dict[str, str]:
    """Every generated section, by the name its README markers carry."""
    registry = registry or load_registry(autoload=False)
    makers: dict[str, Callable[[], str]] = {
        "kinds": lambda: render_kinds(registry),
        "builtins": lambda: render_builtins(registry),
        "contracts": render_contracts,
        "dims": render_dims,
        "helpers": render_helpers,
        "hooks": render_hooks,
        "checks": render_checks,
        "sharded-memory": lambda: render_sharded_memory(registry),
        "check-counts": render_check_counts,
    }
    return {name: make() for name, make in makers.items()}


def _block(name: str) -> re.Pattern[str]:
    begin, end = re.escape(_BEGIN.format(name)), re.escape(_END.format(name))
    return re.compile(f"({begin}\n)(.*?)(\n{end})", re.DOTALL)


def stale(text: str, rendered: dict[str, str]) -> list[str]:
    """The sections whose text in ``text`` differs from ``rendered`` (or whose markers are gone)."""
    out = []
    for name, body in rendered.items():
        match = _block(name).search(text)
        if match is None or match.group(2) != body:
            out.append(name)
    return out


def rewrite(text: str, rendered: dict[str, str]) -> str:
    """``text`` with every marked section replaced by its rendering."""
    for name, body in rendered.items():
        match = _block(name).search(text)
        if match is None:
            raise SystemExit(f"no markers for section {name!r}: add {_BEGIN.format(name)!r}")
        text = text[: match.start(2)] + body + text[match.end(2) :]
    return text


def main(argv: list[str] | None = None) -> int:
    """Print the sections, or rewrite them in place in a README (``--write PATH``)."""
    parser = argparse.ArgumentParser(prog="python -m transformer_from_scratch.guide")
    parser.add_argument("--write", type=Path, metavar="README", help="rewrite its sections")
    args = parser.parse_args(argv)
    rendered = sections()
    if args.write is None:
        for name, body in rendered.items():
            print(f"{_BEGIN.format(name)}\n{body}\n{_END.format(name)}\n")
        return 0
    text = args.write.read_text(encoding="utf-8")
    args.write.write_text(rewrite(text, rendered), encoding="utf-8")
    print(f"rewrote {', '.join(stale(text, rendered)) or 'nothing (already current)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
