"""``tfs new-plugin``: write a plugin distribution with one component to fill in.

The component file copies its kind's exact signatures from ``core/kinds.py`` (the same source the
README's plugin guide is rendered from) and carries the kind's contract as its docstring; its
methods raise a clear "fill me in" error until written, so the generated conformance tests fail
by saying what to do. Nothing existing is ever overwritten.
"""

import re
from pathlib import Path

import attrs

from transformer_from_scratch.core import shapes
from transformer_from_scratch.core.errors import TfsError, unknown_name_message
from transformer_from_scratch.core.kinds import KINDS
from transformer_from_scratch.guide import factory_source, method_names, method_source

_DIST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# The imports a component file may need, by the names its signatures use.
_IMPORTS = {
    "Dims": "from transformer_from_scratch import Dims",
    "LayerCache": "from transformer_from_scratch import LayerCache",
    "PositionalEncoding": "from transformer_from_scratch import PositionalEncoding",
    "AttentionKernel": "from transformer_from_scratch.core.kinds import AttentionKernel",
    "Callable": "from collections.abc import Callable",
}
FILL_IN = "fill in"


@attrs.frozen
class Plan:
    """What ``tfs new-plugin`` writes: names derived once, checked once."""

    distribution: str
    kind: str
    component: str
    out: Path

    @property
    def package(self) -> str:
        """The import package: the distribution name with ``-`` and ``.`` as ``_``."""
        return re.sub(r"[-.]+", "_", self.distribution).lower()

    @property
    def class_name(self) -> str:
        """The component's class: its name in CamelCase."""
        return "".join(part.capitalize() for part in self.component.split("_"))


def plan(distribution: str, kind: str, component: str | None, out: Path | None) -> Plan:
    """Check the names and the target folder; every problem says how to fix it."""
    if not _DIST.match(distribution):
        raise TfsError(
            f"plugin name {distribution!r} is not a distribution name: use letters, digits, "
            "'-', '_' and '.', starting and ending with a letter or digit (e.g. tfs-my-kernel)"
        )
    if kind not in KINDS:
        raise TfsError(unknown_name_message("kind", kind, sorted(KINDS)))
    if component is None:
        component = re.sub(r"^tfs[-_]", "", distribution.lower()).replace("-", "_")
        component = component.replace(".", "_")
    if not _NAME.match(component):
        raise TfsError(
            f"component name {component!r} must be lower case letters, digits and '_', starting "
            "with a letter; give one with --component NAME"
        )
    target = out if out is not None else Path(distribution)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise TfsError(f"{target} already exists and is not empty; choose another --out")
    return Plan(distribution, kind, component, target)


def files(p: Plan) -> dict[str, str]:
    """Every file of the distribution, by its path relative to ``p.out``."""
    src = f"src/{p.package}"
    return {
        "pyproject.toml": _pyproject(p),
        "README.md": _readme(p),
        f"{src}/__init__.py": f'"""{p.distribution}: a transformer-from-scratch plugin."""\n',
        f"{src}/py.typed": "",
        f"{src}/plugin.py": _plugin(p),
        f"{src}/{p.component}.py": component_source(p),
        "tests/test_conformance.py": _tests(p),
    }


def write(p: Plan) -> list[Path]:
    """Write the files (the folder is new or empty); returns their paths."""
    written = []
    for relative, text in files(p).items():
        path = p.out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as handle:  # never overwrite
            handle.write(text)
        written.append(path)
    return written


def _pyproject(p: Plan) -> str:
    return f"""[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "{p.distribution}"
version = "0.1.0"
description = "A {p.kind} for transformer-from-scratch: {p.component}."
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["transformer-from-scratch"]

[project.optional-dependencies]
test = ["pytest>=8"]

# This entry point is what makes the distribution a plugin: transformer-from-scratch loads
# every entry point in the group `transformer_from_scratch` when it builds its registry.
[project.entry-points.transformer_from_scratch]
{p.package} = "{p.package}.plugin"

[tool.setuptools.packages.find]
where = ["src"]

[tool.setuptools.package-data]
{p.package} = ["py.typed"]
"""


def _plugin(p: Plan) -> str:
    vocabulary = ", ".join(KINDS[p.kind].capabilities) or "none for this kind"
    return f'''"""The module the entry point names: one hook that registers the component."""

from transformer_from_scratch import Registry, hookimpl

from {p.package}.{p.component} import {p.class_name}


@hookimpl
def register_components(registry: Registry) -> None:
    """Register {p.kind}/{p.component}."""
    # Declare only what the component really does; the conformance suite checks each one.
    # Capabilities of kind {p.kind}: {vocabulary}.
    registry.register("{p.kind}", "{p.component}", {p.class_name}, capabilities=[])
'''


def component_source(p: Plan) -> str:
    """The component file: the kind's signatures, its contract as docstring, bodies to write."""
    info = KINDS[p.kind]
    base = "PositionalEncoding" if p.kind == "positional" else "nn.Module"
    methods = [_method(p, name) for name in method_names(p.kind)]
    init = factory_source(info).split("  #")[0]
    article = "an" if p.kind[0] in "aeiou" else "a"
    header = f'"""``{p.component}``: {article} {p.kind} for transformer-from-scratch."""'
    cls = (
        f"class {p.class_name}({base}):\n"
        f'    """One line saying what it is, with its source (shown by `tfs list`).\n\n'
        f"    The contract of kind {p.kind!r} (from transformer_from_scratch.core.kinds):\n\n"
        f"{_wrap(info.guide, '    ')}\n"
        f'    """\n\n'
        f"{_format_def(init, '    ')}\n{_init_body(p)}\n\n" + "\n\n".join(methods)
    )
    imports = _imports(p, "\n".join([base, init, *methods, _init_body(p)]))
    return f"{header}\n\n{imports}\n\n\n{cls}\n"


def _imports(p: Plan, code: str) -> str:
    """The import block, grouped and sorted as isort (and ruff) would."""
    joined = re.sub(r"#.*", "", code)  # names in comments need no import
    used = set(re.findall(r"\b[A-Za-z_]+\b", joined))
    names = ("Dims", "HookPoint", "LayerCache", "PositionalEncoding")
    ours = sorted(name for name in names if name in used)
    shapes = sorted((name for name in _shape_names() if name in used), key=str.lower)
    third = []
    if re.search(r"\bnn\.", joined):
        third.append("from torch import nn")
    if ours:
        third.append(f"from transformer_from_scratch import {', '.join(ours)}")
    if "AttentionKernel" in used:
        third.append("from transformer_from_scratch.core.kinds import AttentionKernel")
    if p.kind == "embedding":
        third.append("from transformer_from_scratch.core.functional import new_weight")
    if shapes:
        third.append(_format_import("transformer_from_scratch.core.shapes", shapes))
    third.sort(key=lambda line: line.split(" import ")[0])
    std = ["from collections.abc import Callable"] if "Callable" in used else []
    return "\n\n".join("\n".join(group) for group in (std, third) if group)


def _format_import(module: str, names: list[str]) -> str:
    line = f"from {module} import {', '.join(names)}"
    if len(line) <= 100:
        return line
    return f"from {module} import (\n" + "".join(f"    {n},\n" for n in names) + ")"


def _format_def(signature: str, indent: str) -> str:
    """A ``def`` line, split one parameter per line when it is too long (as ruff formats it)."""
    if len(indent + signature) <= 100:
        return indent + signature
    head, rest = signature.split("(", 1)
    inside, tail = rest.rsplit(") ->", 1)
    params = [part.strip() for part in _split_params(inside)]
    body = "".join(f"{indent}    {param},\n" for param in params)
    return f"{indent}{head}(\n{body}{indent}) ->{tail}"


def _split_params(inside: str) -> list[str]:
    """Split at top-level commas (not those inside ``[...]``)."""
    parts, depth, current = [], 0, ""
    for char in inside:
        depth += 1 if char in "[(" else -1 if char in "])" else 0
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current] if current.strip() else parts


def _shape_names() -> set[str]:
    return set(shapes.__all__)


def _init_body(p: Plan) -> str:
    lines = [
        "        # Options: add them as keyword arguments with defaults; a spec sets them.",
        "        super().__init__()",
        "        self.dims = dims",
    ]
    lines += [
        f"        self.{name} = {name}"
        for name in KINDS[p.kind].injected
        if name not in ("make_norm", "embedding")
    ]
    if "make_norm" in KINDS[p.kind].injected:
        lines.append("        self.norms = nn.ModuleList([make_norm(), make_norm()])  # one each")
    if p.kind == "embedding":
        lines.append(
            "        self.weight = new_weight(\n"
            '            dims.d_vocab, dims.d_model, scheme="normal", fan_in=dims.d_vocab, '
            "fan_out=dims.d_model\n        )  # the contract: a tied unembedding shares it"
        )
    if p.kind == "unembedding":
        lines.append("        self.embedding = embedding  # a tied one reads embedding.weight")
    if KINDS[p.kind].hooks:
        lines.append("        # Hook points the kind owes: pass each activation through its own,")
        lines.append("        # `x = self.hook_pre(x)`, and go on with what it returns.")
    for leaf, layout in KINDS[p.kind].hooks.items():
        note = " (if it has one: declare resid_mid)" if leaf == "hook_resid_mid" else ""
        lines.append(f"        self.{leaf} = HookPoint()  # [{layout}]{note}")
    lines.append("        # Make your parameters here: core.functional.new_weight or nn.Parameter.")
    return "\n".join(lines)


def _method(p: Plan, name: str) -> str:
    signature = _format_def(method_source(p.kind, name), "    ")
    if p.kind == "positional" and name != "embed":
        call = ", ".join(_parameter_names(method_source(p.kind, name)))
        return (
            f"{signature}\n"
            f'        """Neutral until you override it (declare the capability when you do)."""\n'
            f"        return super().{name}({call})"
        )
    where = f"src/{p.package}/{p.component}.py"
    return (
        f"{signature}\n"
        f'        """Write this: see the contract in the class docstring."""\n'
        f"        raise NotImplementedError(\n"
        f'            "{p.kind}/{p.component}: {FILL_IN} {name}() in "\n'
        f'            "{where} "\n'
        f'            "(a placeholder from tfs new-plugin; "\n'
        f'            "the conformance tests pass once it keeps the contract of kind {p.kind!r})"\n'
        f"        )"
    )


def _parameter_names(signature: str) -> list[str]:
    inside = signature[signature.index("(") + 1 : signature.rindex(") ->")]
    names = [part.split(":")[0].strip() for part in inside.split(",")]
    return [n for n in names if n not in ("self", "*")]


def _wrap(text: str, indent: str, width: int = 96) -> str:
    words, lines, line = " ".join(text.split()).split(" "), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width - len(indent):
            lines.append(indent + line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(indent + line)
    return "\n".join(lines)


def _tests(p: Plan) -> str:
    return f'''"""The conformance suite on this plugin's component: each check its kind promises."""

import pytest
from transformer_from_scratch import conformance


@pytest.mark.parametrize(
    ("subject", "check", "expected"),
    conformance.pytest_params(distribution="{p.distribution}"),
)
def test_conforms(
    subject: conformance.Subject, check: conformance.Check, expected: str | None
) -> None:
    conformance.assert_conforms(subject, check, expected)
'''


def _readme(p: Plan) -> str:
    return f"""# {p.distribution}

A plugin for transformer-from-scratch: `{p.kind}/{p.component}`.

## Fill it in

`src/{p.package}/{p.component}.py` holds the class with the exact signatures of kind `{p.kind}`
and, as its docstring, what they take and return. Until you write them they raise
"{FILL_IN} ...", so the tests fail and say so. Then:

```
pip install -e ".[test]"     # installs the plugin; `tfs list` shows {p.kind}/{p.component}
pytest                       # the conformance suite on it, one test per check
tfs check {p.kind}/{p.component}   # the same, as a table
```

Declare each capability your component really has in `src/{p.package}/plugin.py`
(`capabilities=[...]`); the suite checks every one. Use it in a spec:

```toml
[components]
{p.kind} = "{p.component}"
```
"""
