"""Declarative specs: which implementation fills each slot, and the model's sizes.

A :class:`DecoderSpec` is a frozen record holding names and plain values only (never an import
path or a class), so loading one from a file or a checkpoint can reach registered code and
nothing else. It reads from and writes to a dict, TOML or JSON, losslessly::

    d_model = 128
    n_layers = 2
    n_heads = 4
    d_head = 32
    d_mlp = 512
    d_vocab = 256
    n_ctx = 64

    [components]
    positional = "sinusoidal"
    mlp = { name = "gelu", options = { approximate = "tanh" } }

Components left out take the GPT-2 choice. Every problem in a spec is reported at once, each
with its field path, the bad value and a fix. Checks that need the registry (unknown names,
options, capabilities) live in :mod:`transformer_from_scratch.core.validate`.
"""

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import cattrs
import tomli_w

from transformer_from_scratch.core.component import (
    COMPONENT_KINDS,
    Component,
    Components,
    as_component,
    component_problems,
    unknown_keys,
    unstructure_component,
)
from transformer_from_scratch.core.dims import Dims
from transformer_from_scratch.core.errors import SpecError
from transformer_from_scratch.core.layers import (
    LayerOverride,
    apply_overrides,
    as_override,
    as_overrides,
    override_problems,
    representative_layers,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

SIZE_FIELDS = ("d_model", "n_layers", "n_heads", "d_head", "d_mlp", "d_vocab", "n_ctx")


# The spec format's version: written as ``spec_version`` by to_dict, refused when newer.
SPEC_VERSION = 1


@attrs.frozen(kw_only=True)
class DecoderSpec:
    """A whole decoder: sizes plus one component per kind.

    ``n_kv_heads`` (default: ``n_heads``) is the number of key/value heads, for grouped-query
    attention; ``final_norm`` adds a norm between the last block and the unembedding (GPT-2 has
    one; the original project did not); ``dropout`` is the probability of zeroing an activation
    while training where GPT-2 has dropout: the embedding sum, the attention weights and each
    sublayer's output (0, the default: none).
    """

    d_model: int
    n_layers: int
    n_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    n_kv_heads: int | None = None
    final_norm: bool = True
    dropout: float = 0.0
    components: Components = attrs.field(factory=Components)
    layers: tuple[LayerOverride, ...] = attrs.field(default=(), converter=as_overrides)

    def __attrs_post_init__(self) -> None:
        problems = _field_problems(attrs.asdict(self, recurse=False))
        problems += _layers_problems(self.layers, self.n_layers)
        if problems:
            raise SpecError(problems)

    def components_for(self, layer: int) -> Components:
        """The components of block ``layer``, per-layer overrides applied."""
        return apply_overrides(self.components, self.layers, layer)

    def all_components(self) -> list[tuple[str, Components]]:
        """``(where, components)``: the spec's own, then each block that differs from it."""
        found = [("components", self.components)]
        for layer in representative_layers(self.n_layers, self.layers):
            chosen = self.components_for(layer)
            if chosen != self.components:
                found.append((f"layer {layer}", chosen))
        return found

    @property
    def dims(self) -> Dims:
        """The sizes every factory receives."""
        return Dims(
            d_model=self.d_model,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            d_head=self.d_head,
            d_mlp=self.d_mlp,
            d_vocab=self.d_vocab,
            n_ctx=self.n_ctx,
            n_kv_heads=self.n_kv_heads or self.n_heads,
            dropout=self.dropout,
        )

    def evolve(self, **changes: Any) -> "DecoderSpec":
        """A copy with some fields changed; component names may be given as strings."""
        comps = {k: changes.pop(k) for k in list(changes) if k in COMPONENT_KINDS}
        if comps:
            parts = {k: as_component(v) for k, v in comps.items()}
            changes["components"] = attrs.evolve(self.components, **parts)
        return attrs.evolve(self, **changes)

    def differences(self, other: "DecoderSpec") -> list[tuple[str, str, str]]:
        """``(field path, this value, other value)`` for every field where the specs differ."""
        return _differences(_expanded(self), _expanded(other))

    # --- in and out ---------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "spec") -> "DecoderSpec":
        """Structure a dict (from TOML, JSON or code); every problem is reported at once."""
        data = _without_version(data, source)
        problems = dict_problems(data)
        if problems:
            raise SpecError(
                problems, source=source, data=data if isinstance(data, Mapping) else None
            )
        try:
            return _converter.structure(dict(data), cls)
        except SpecError as err:
            raise SpecError(err.problems, source=source) from None

    def to_dict(self) -> dict[str, Any]:
        """The plain dict form (what TOML and JSON hold); ``from_dict`` reads it back equal."""
        data: dict[str, Any] = {"spec_version": SPEC_VERSION, **_converter.unstructure(self)}
        if data.get("n_kv_heads") is None:
            data.pop("n_kv_heads", None)
        if not data["layers"]:
            del data["layers"]
        if not data["dropout"]:
            del data["dropout"]  # specs without dropout read as they always did
        return data

    @classmethod
    def from_toml(cls, text: str, *, source: str = "TOML spec") -> "DecoderSpec":
        """Parse TOML text."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise SpecError([f"not valid TOML: {err}"], source=source) from None
        return cls.from_dict(data, source=source)

    def to_toml(self) -> str:
        """TOML text that ``from_toml`` reads back equal."""
        return tomli_w.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str, *, source: str = "JSON spec") -> "DecoderSpec":
        """Parse JSON text."""
        try:
            data = json.loads(text.removeprefix("\ufeff"), object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as err:
            raise SpecError([f"not valid JSON: {err}"], source=source) from None
        except _DuplicateKey as err:
            raise SpecError([str(err)], source=source) from None
        if not isinstance(data, dict):
            raise SpecError([f"expected a JSON object, got {type(data).__name__}"], source=source)
        return cls.from_dict(data, source=source)

    def to_json(self) -> str:
        """JSON text that ``from_json`` reads back equal."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_file(cls, path: str | Path) -> "DecoderSpec":
        """Read a ``.toml`` or ``.json`` spec file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is accepted
        except (OSError, UnicodeDecodeError) as err:
            raise SpecError([f"cannot read {path}: {err}"], source=str(path)) from None
        if path.suffix.lower() == ".json":
            return cls.from_json(text, source=str(path))
        return cls.from_toml(text, source=str(path))

    @classmethod
    def preset(cls, name: str, registry: Any = None) -> "DecoderSpec":
        """A registered preset (``seed``, ``gpt2``, ``tiny``, or one a plugin adds)."""
        from transformer_from_scratch.core.plugins import default_registry

        chosen = (registry or default_registry()).preset(name)
        return cls.from_dict(chosen.spec, source=f"preset {name!r}")


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a key given twice (json.loads would keep the last silently)."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(
                f"key {key!r} appears twice in one JSON object ({seen[key]!r}, then {value!r}); "
                "keep one"
            )
        seen[key] = value
    return seen


def _without_version(data: Mapping[str, Any], source: str) -> Mapping[str, Any]:
    """``data`` without ``spec_version``, refused if it is newer than this code understands."""
    if not isinstance(data, Mapping) or "spec_version" not in data:
        return data
    version = data["spec_version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise SpecError([f"spec_version: {version!r} must be a whole number from 1"], source=source)
    if version > SPEC_VERSION:
        raise SpecError(
            [f"spec_version: this spec has version {version}, but this transformer-from-scratch "
             f"reads versions up to {SPEC_VERSION}; upgrade it (pip install -U "
             "transformer-from-scratch)"], source=source,
        )  # fmt: skip
    return {k: v for k, v in data.items() if k != "spec_version"}


def _expanded(spec: DecoderSpec) -> dict[str, Any]:
    """The dict form with every component as a table, so names and options line up."""
    data = spec.to_dict()
    data["components"] = {
        kind: {"name": c.name, **({"options": dict(c.options)} if c.options else {})}
        for kind, c in spec.components.items()
    }
    return data


def _differences(
    a: dict[str, Any], b: dict[str, Any], prefix: str = ""
) -> list[tuple[str, str, str]]:
    rows = []
    for key in sorted(set(a) | set(b)):
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            rows += _differences(left, right, f"{prefix}{key}.")
        elif left != right:
            rows.append((f"{prefix}{key}", _shown(left), _shown(right)))
    return rows


def _shown(value: Any) -> str:
    return "-" if value is None else str(value)


# --- field-level validation (no registry needed) ------------------------------------------
_SPEC_KEYS = [f.name for f in attrs.fields(DecoderSpec)]


def dict_problems(data: Mapping[str, Any]) -> list[str]:
    """Every problem in a spec's dict form: unknown keys, types, sizes, components."""
    if not isinstance(data, Mapping):
        return [f"a spec is a table of fields, got {type(data).__name__}"]
    problems = unknown_keys(data, _SPEC_KEYS, "")
    required = [f.name for f in attrs.fields(DecoderSpec) if f.default is attrs.NOTHING]
    problems += [f"{key}: missing; add `{key} = <int>`" for key in required if key not in data]
    problems += _field_problems(data)
    comps = data.get("components", {})
    if isinstance(comps, Components):
        return problems
    if not isinstance(comps, Mapping):
        return [*problems, f"components: expected a table of kind = name, got {comps!r}"]
    problems += unknown_keys(comps, list(COMPONENT_KINDS), "components.")
    for kind, value in comps.items():
        if kind in COMPONENT_KINDS:
            problems += component_problems(value, f"components.{kind}")
    return problems + _layers_problems(data.get("layers", []), data.get("n_layers"))


def _layers_problems(layers: Any, n_layers: Any) -> list[str]:
    if not isinstance(layers, list | tuple):
        return [f"layers: expected a list of [[layers]] tables, got {layers!r}"]
    problems = []
    for index, entry in enumerate(layers):
        problems += override_problems(entry, n_layers, f"layers[{index}]")
    return problems


def _field_problems(data: Mapping[str, Any]) -> list[str]:
    problems = []
    for key in SIZE_FIELDS:
        if key in data:
            problems += _positive_int(data[key], key)
    if data.get("n_kv_heads") is not None:
        problems += _positive_int(data["n_kv_heads"], "n_kv_heads")
    if "final_norm" in data and not isinstance(data["final_norm"], bool):
        problems.append(f"final_norm: expected true or false, got {data['final_norm']!r}")
    if "dropout" in data:
        problems += _probability(data["dropout"], "dropout")
    if not problems:
        problems += _cross_field_problems(data)
    return problems


def _positive_int(value: Any, path: str) -> list[str]:
    if isinstance(value, bool) or not isinstance(value, int):
        return [f"{path}: expected a whole number, got {value!r} ({type(value).__name__})"]
    if value <= 0:
        return [f"{path}: must be positive, got {value}"]
    if value > MAX_SIZE:
        return [f"{path}: {value:.3g} is larger than any tensor dimension ({MAX_SIZE:,} at most)"]
    return []


def _probability(value: Any, path: str) -> list[str]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return [f"{path}: expected a number from 0 up to (not including) 1, got {value!r}"]
    if not 0 <= value < 1:
        return [f"{path}: {value} is not a probability below 1 (0 turns dropout off)"]
    return []


MAX_SIZE = 2**31 - 1  # tensor dimensions beyond int32 are refused by most kernels


def _cross_field_problems(data: Mapping[str, Any]) -> list[str]:
    heads, kv_heads = data.get("n_heads"), data.get("n_kv_heads")
    if isinstance(heads, int) and isinstance(kv_heads, int) and heads % kv_heads:
        return [
            f"n_kv_heads: {kv_heads} does not divide n_heads = {heads}; each key/value head "
            f"serves a whole group of query heads (try one of {_divisors(heads)})"
        ]
    return []


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(Component, lambda value, _: as_component(value))
    converter.register_unstructure_hook(Component, unstructure_component)
    converter.register_structure_hook(LayerOverride, lambda value, _: as_override(value))
    converter.register_unstructure_hook(LayerOverride, LayerOverride.to_dict)
    return converter


_converter = _make_converter()
