"""What a training run is asked to do: one frozen record, saved with every checkpoint."""

import json
import math
from pathlib import Path
from typing import Any

import attrs

from transformer_from_scratch.core.errors import TfsError

# (option, lowest, whether the lowest itself is allowed, highest (excluded) or None)
_RANGES = [
    ("steps", 1, True, None), ("batch_size", 1, True, None), ("eval_every", 1, True, None),
    ("eval_batches", 1, True, None), ("checkpoint_every", 1, True, None),
    ("log_every", 1, True, None), ("warmup", 0, True, None), ("context", 2, True, None),
    ("stop_after", 1, True, None), ("keep", 1, True, None), ("lr", 0, False, None),
    ("min_lr", 0, True, None), ("weight_decay", 0, True, None), ("beta2", 0, True, 1),
    ("grad_clip", 0, False, None), ("spike_sigma", 0, False, None),
    ("sample_tokens", 0, True, None), ("accumulate", 1, True, None),
]  # fmt: skip


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _range_problems(config: "TrainConfig") -> list[str]:
    problems = []
    for name, low, inclusive, high in _RANGES:
        value = getattr(config, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{_flag(name)} must be a number, got {value!r}")
            continue
        too_low = value < low if inclusive else value <= low
        if not math.isfinite(value) or too_low or (high is not None and value >= high):
            allowed = f"{'at least' if inclusive else 'above'} {low}" + (
                f" and below {high}" if high is not None else ""
            )
            problems.append(f"{_flag(name)} = {value} is out of range: it must be {allowed}")
    return problems


@attrs.frozen(kw_only=True)
class TrainConfig:
    """Options of ``tfs train`` (see ``tfs train --help`` for each)."""

    spec: str = "small"
    data: str | None = None
    tokenizer: str = "byte"
    steps: int = 1200
    stop_after: int | None = None
    batch_size: int = 16
    accumulate: int = 1  # passes per optimiser step: each process's share split this many ways
    context: int | None = None
    lr: float = 3e-3
    min_lr: float | None = None
    warmup: int = 50
    weight_decay: float = 0.1
    beta2: float = 0.95
    grad_clip: float | None = 1.0
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"
    compile: bool = False
    parallel: str = "auto"  # ddp, fsdp, or auto: fsdp when a whole copy per process won't fit
    activation_checkpointing: bool = False
    out: str = "runs/default"
    resume: bool = False
    eval_every: int = 100
    eval_batches: int = 8
    checkpoint_every: int = 200
    log_every: int = 10
    sample_tokens: int = 200
    sample_prompt: str | None = None  # None: the validation text's opening words
    tensorboard: bool = False
    wandb: bool = False
    quiet: bool = False
    keep: int = 3
    spike_sigma: float = 6.0
    stop_on_spike: bool = False
    # The options the user gave (the CLI fills it); None: every option that differs from its
    # default counts as given. Not saved with the run.
    given: frozenset[str] | None = attrs.field(default=None, eq=False)

    def __attrs_post_init__(self) -> None:
        problems = _range_problems(self)
        if self.dtype not in ("float32", "bfloat16"):
            problems.append(f"--dtype must be float32 or bfloat16, got {self.dtype!r}")
        if self.parallel not in ("auto", "ddp", "fsdp"):
            problems.append(f"--parallel must be auto, ddp or fsdp, got {self.parallel!r}")
        if problems:
            raise TfsError("; ".join(problems))

    @property
    def final_lr(self) -> float:
        """Where the cosine schedule ends (a tenth of ``lr`` unless given)."""
        return self.lr / 10 if self.min_lr is None else self.min_lr

    @property
    def out_dir(self) -> Path:
        """The run folder."""
        return Path(self.out)

    def to_json(self) -> str:
        """JSON of every option."""
        options = attrs.asdict(self, filter=lambda field, _: field.name != "given")
        return json.dumps(options, sort_keys=True)

    def explicit(self) -> frozenset[str]:
        """The options the user asked for (see ``given``)."""
        if self.given is not None:
            return self.given
        return frozenset(
            f.name for f in attrs.fields(TrainConfig)
            if f.name != "given" and getattr(self, f.name) != f.default
        )  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        """Read back :meth:`to_json`."""
        data: dict[str, Any] = json.loads(text)
        known = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
