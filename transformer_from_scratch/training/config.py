"""What a training run is asked to do: one frozen record, saved with every checkpoint."""

import json
from pathlib import Path
from typing import Any

import attrs

from transformer_from_scratch.core.errors import TfsError


@attrs.frozen(kw_only=True)
class TrainConfig:
    """Options of ``tfs train`` (see ``tfs train --help`` for each)."""

    spec: str = "small"
    data: str | None = None
    tokenizer: str = "byte"
    steps: int = 1200
    stop_after: int | None = None
    batch_size: int = 16
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
    out: str = "runs/default"
    resume: bool = False
    eval_every: int = 100
    eval_batches: int = 8
    checkpoint_every: int = 200
    log_every: int = 10
    sample_tokens: int = 200
    sample_prompt: str = "def "
    tensorboard: bool = False
    wandb: bool = False
    quiet: bool = False

    def __attrs_post_init__(self) -> None:
        positive = (
            "steps",
            "batch_size",
            "eval_every",
            "eval_batches",
            "checkpoint_every",
            "log_every",
        )
        problems = [
            f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}"
            for name in positive
            if getattr(self, name) <= 0
        ]
        if self.warmup < 0:
            problems.append(f"--warmup must be 0 or more, got {self.warmup}")
        if self.context is not None and self.context < 2:
            problems.append(f"--context must be at least 2, got {self.context}")
        if self.lr <= 0:
            problems.append(f"--lr must be positive, got {self.lr}")
        if self.dtype not in ("float32", "bfloat16"):
            problems.append(f"--dtype must be float32 or bfloat16, got {self.dtype!r}")
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
        return json.dumps(attrs.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        """Read back :meth:`to_json`."""
        data: dict[str, Any] = json.loads(text)
        known = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
