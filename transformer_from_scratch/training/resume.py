"""``--resume`` continues a run as it was: its own options, with any the user gives on top.

The options are read back from the latest checkpoint's state file. Those that define what the
run *is* cannot change (the tokenizer, context and seed here; the spec and the data's content
when the run starts); the rest may, and each change is said in one line (extending ``--steps``
extends the learning-rate schedule, deliberately).
"""

import attrs

from transformer_from_scratch.core.errors import CheckpointError, TfsError
from transformer_from_scratch.training import state as run_folder
from transformer_from_scratch.training.config import TrainConfig

# A different spec file or data path is let through: the run then checks that the spec and the
# data's content are the same (a moved file is fine) and refuses, showing how, when they are not.
FIXED = ("tokenizer", "context", "seed")
NOT_OPTIONS = ("resume", "out", "given")


def saved_config(config: TrainConfig) -> TrainConfig | None:
    """The options the run in ``config.out`` was started with, if a checkpoint records them."""
    out = config.out_dir
    try:
        saved = run_folder.latest(out)
    except CheckpointError:
        saved = None
    saved = saved or run_folder.recover(out)
    if saved is None:
        return None
    try:
        _, metadata = run_folder.read_state(saved)
        return TrainConfig.from_json(metadata["config"])
    except (CheckpointError, KeyError, ValueError, TypeError):
        return None


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def remembered(config: TrainConfig) -> tuple[TrainConfig, list[str]]:
    """``config`` for a resumed run (the saved options plus the given ones), and what changed."""
    saved = saved_config(config)
    if saved is None:
        return config, []
    given = {k: getattr(config, k) for k in config.explicit() if k not in NOT_OPTIONS}
    changed = {k: v for k, v in given.items() if v != getattr(saved, k)}
    refused = [f"{_flag(k)} {v!r} (the run has {getattr(saved, k)!r})"
               for k, v in changed.items() if k in FIXED]  # fmt: skip
    if refused:
        raise TfsError(
            "--resume continues the run as it was, and these define it: "
            + "; ".join(refused)
            + ". Leave them out to continue, or start a new run with another --out"
        )
    lines = [f"{_flag(k)} {v} (was {getattr(saved, k)})" for k, v in changed.items()]
    if "steps" in changed:
        lines.append(f"the learning-rate schedule now ends at step {changed['steps']}")
    merged = attrs.evolve(saved, **changed, resume=True, out=config.out, given=config.given)
    return merged, lines
