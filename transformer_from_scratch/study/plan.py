"""A study file: a base spec, its variants, the data, the budget, the seeds, the learning rates.

::

    name = "positional"
    base = "small"                       # a preset or a spec file
    baseline = "learned"                 # the variant the others are compared with
    seeds = [0, 1, 2]
    data = "../shared/data/tinyshakespeare.txt"   # optional: the embedded corpus by default
    tokenizer = "char"
    extrapolate = 2                      # also evaluate at 2x the training context

    [budget]                             # one of: steps, tokens, flops
    tokens = 400_000

    [train]                              # any other `tfs train` option
    batch_size = 16
    context = 64

    [lr]                                 # a list, or a log range with a count
    values = [1e-3, 3e-3]                # or: low = 1e-4, high = 1e-2, count = 5

    [[variants]]
    name = "rotary"
    components = { positional = "rotary" }
    set = { n_kv_heads = 2 }             # size fields of the spec

Every problem in a file is reported at once, naming the field.
"""

import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from transformer_from_scratch.core.errors import TfsError
from transformer_from_scratch.core.spec import DecoderSpec
from transformer_from_scratch.training.config import TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BUDGETS = ("steps", "tokens", "flops")
_TOP = {"name", "base", "baseline", "seeds", "data", "tokenizer", "extrapolate", "budget",
        "train", "lr", "variants"}  # fmt: skip
# Options a study decides itself, per trial.
_FIXED = {"spec", "data", "tokenizer", "steps", "lr", "seed", "out", "resume", "stop_after"}


@attrs.frozen
class Variant:
    """One arm of the study: changes to the base spec."""

    name: str
    components: Mapping[str, Any] = attrs.field(factory=dict)
    sizes: Mapping[str, Any] = attrs.field(factory=dict)

    def spec(self, base: DecoderSpec) -> DecoderSpec:
        """The base spec with this variant's changes."""
        return base.evolve(**self.sizes, **self.components)


@attrs.frozen
class Cell:
    """One trial's work: a variant at a learning rate and a seed."""

    variant: str
    lr: float
    seed: int

    @property
    def key(self) -> str:
        """A stable name, also the trial's folder: ``rotary/lr0.003/seed1``."""
        return f"{self.variant}/lr{self.lr:g}/seed{self.seed}"


@attrs.frozen
class Plan:
    """A parsed, checked study file."""

    name: str
    base: str
    variants: tuple[Variant, ...]
    seeds: tuple[int, ...]
    lrs: tuple[float, ...]
    budget: tuple[str, float]
    train: Mapping[str, Any]
    baseline: str
    data: str | None = None
    tokenizer: str = "byte"
    extrapolate: float | None = None
    source: str = ""

    def cells(self) -> list[Cell]:
        """Every trial, seeds innermost so each variant's first seeds finish early."""
        return [Cell(v.name, lr, seed) for seed in self.seeds for v in self.variants
                for lr in self.lrs]  # fmt: skip

    def variant(self, name: str) -> Variant:
        """The variant called ``name``."""
        return next(v for v in self.variants if v.name == name)

    def train_config(self, cell: Cell, spec_path: Path, out: Path, steps: int) -> TrainConfig:
        """The `tfs train` options of one trial."""
        options = {"sample_tokens": 0, "quiet": True, "checkpoint_every": max(steps // 4, 1),
                   "eval_every": max(steps // 8, 1), **self.train}  # fmt: skip
        return TrainConfig(spec=str(spec_path), data=self.data, tokenizer=self.tokenizer,
                           steps=steps, lr=cell.lr, seed=cell.seed, out=str(out),
                           **options)  # fmt: skip


def load_plan(path: str | Path) -> Plan:
    """Read and check a study file; every problem at once."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise TfsError(f"cannot read the study file {path}: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise TfsError(f"{path} is not valid TOML: {err}") from None
    problems: list[str] = []
    plan = _parse(raw, problems, path)
    if problems or plan is None:
        raise TfsError(f"{path} has {len(problems)} problem(s):\n  - " + "\n  - ".join(problems))
    return plan


def _parse(raw: dict[str, Any], problems: list[str], path: Path) -> Plan | None:
    for key in sorted(set(raw) - _TOP):
        problems.append(f"unknown field {key!r} (fields: {', '.join(sorted(_TOP))})")
    name = raw.get("name", path.stem)
    base = str(raw.get("base", "small"))
    variants = _variants(raw.get("variants"), problems)
    seeds = _seeds(raw.get("seeds", [0]), problems)
    lrs = _lrs(raw.get("lr", {"values": [TrainConfig().lr]}), problems)
    budget = _budget(raw.get("budget"), problems)
    train = dict(raw.get("train", {}))
    for key in sorted(set(train) & _FIXED):
        problems.append(f"train.{key}: the study sets it per trial; give it at the top level "
                        "(base, data, tokenizer, seeds, lr, budget)")  # fmt: skip
    for key in sorted(set(train) - set(attrs.fields_dict(TrainConfig)) - _FIXED):
        problems.append(f"train.{key}: not a `tfs train` option")
    names = [v.name for v in variants]
    baseline = str(raw.get("baseline", names[0] if names else ""))
    if names and baseline not in names:
        problems.append(f"baseline {baseline!r} is not one of the variants: {', '.join(names)}")
    extrapolate = raw.get("extrapolate")
    if extrapolate is not None and (not isinstance(extrapolate, int | float) or extrapolate <= 1):
        problems.append(f"extrapolate = {extrapolate!r}: give a factor above 1 (2 = twice)")
    if problems or budget is None:
        return None
    return Plan(str(name), base, tuple(variants), seeds, lrs, budget, train, baseline,
                raw.get("data"), str(raw.get("tokenizer", "byte")), extrapolate,
                str(path))  # fmt: skip


def _variants(raw: Any, problems: list[str]) -> list[Variant]:
    if not isinstance(raw, list) or not raw:
        problems.append("variants: give at least one [[variants]] table with a name")
        return []
    variants, seen = [], set()
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            problems.append(f"variants[{i}]: a table with a name")
            continue
        extra = set(item) - {"name", "components", "set"}
        if extra:
            problems.append(f"variants[{i}] ({item['name']}): unknown {sorted(extra)}; "
                            "use components = {...} and set = {...}")  # fmt: skip
        if item["name"] in seen:
            problems.append(f"variants[{i}]: the name {item['name']!r} is used twice")
        seen.add(item["name"])
        variants.append(Variant(item["name"], dict(item.get("components", {})),
                                dict(item.get("set", {}))))  # fmt: skip
    return variants


def _seeds(raw: Any, problems: list[str]) -> tuple[int, ...]:
    ok = isinstance(raw, list) and raw and all(isinstance(s, int) and s >= 0 for s in raw)
    if not ok or len(set(raw)) != len(raw):
        problems.append(f"seeds = {raw!r}: give distinct whole numbers, e.g. [0, 1, 2]")
        return (0,)
    return tuple(raw)


def _lrs(raw: Any, problems: list[str]) -> tuple[float, ...]:
    if isinstance(raw, dict) and "values" in raw:
        values = raw["values"]
        if isinstance(values, list) and values and all(_positive(v) for v in values):
            return tuple(float(v) for v in values)
    elif isinstance(raw, dict) and {"low", "high", "count"} <= set(raw):
        low, high, count = raw["low"], raw["high"], raw["count"]
        whole = isinstance(count, int) and not isinstance(count, bool) and count >= 2
        if _positive(low) and _positive(high) and low < high and whole:
            step = (math.log(high) - math.log(low)) / (count - 1)
            return tuple(float(f"{math.exp(math.log(low) + i * step):.3g}") for i in range(count))
    problems.append("lr: give values = [..] (positive numbers) or low, high (low < high) and "
                    "count (at least 2) for a log-spaced sweep")  # fmt: skip
    return (TrainConfig().lr,)


def _positive(value: Any) -> bool:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and math.isfinite(value) and value > 0


def _budget(raw: Any, problems: list[str]) -> tuple[str, float] | None:
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in BUDGETS:
        problems.append(f"budget: give exactly one of {', '.join(BUDGETS)} (e.g. tokens = 400000)")
        return None
    kind, amount = next(iter(raw.items()))
    if not _positive(amount):
        problems.append(f"budget.{kind} = {amount!r}: give a positive number")
        return None
    return kind, float(amount)
