"""Running a study: trials scheduled through Optuna's storage, each a normal `tfs train` run.

The study folder holds ``study.toml`` (the plan), ``specs/`` (one spec file per variant),
``optuna.db`` (the default SQLite storage: which trials exist, run, finished or failed) and
``trials/<variant>/lr<lr>/seed<n>/`` (a run folder per cell, which `tfs generate`, `tfs inspect`
and `tfs train --resume` read like any other).

Any number of workers (processes, or machines sharing a ``--storage`` URL and the folder) take
cells in turn. A worker claims a cell inside an Optuna trial; when two claim the same cell at
once, the trial with the lower number keeps it. A running trial's worker writes a heartbeat; a
trial whose heartbeat stops (a killed worker) is marked failed by the next worker to look, and
its cell is run again, resuming from the cell's last checkpoint. A cell completed once is never
run again.
"""

import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import torch

from transformer_from_scratch.bench.flops import training_flops_per_token
from transformer_from_scratch.bench.memory import peak_bytes
from transformer_from_scratch.core.builder import build_decoder
from transformer_from_scratch.core.checkpoint import load_checkpoint
from transformer_from_scratch.core.errors import TfsError
from transformer_from_scratch.core.plugins import default_registry
from transformer_from_scratch.core.spec import DecoderSpec
from transformer_from_scratch.core.validate import load_spec
from transformer_from_scratch.study.plan import Cell, Plan, load_plan
from transformer_from_scratch.training import state as run_folder
from transformer_from_scratch.training.loop import read_log, run_trainer

PLAN_FILE, STORAGE_FILE, ORIGIN_FILE = "study.toml", "optuna.db", "origin.json"


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise TfsError(
            "studies need Optuna: pip install 'transformer-from-scratch[study]'"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def heartbeat() -> tuple[int, int]:
    """Seconds between a running trial's heartbeats, and without one before it is stale."""
    every = int(os.environ.get("TFS_STUDY_HEARTBEAT", "10"))
    return every, 3 * every


def prepare(plan_path: Path, out: Path | None) -> Path:
    """Make (or reopen) the study folder for ``plan_path``; refuse a folder of another study."""
    plan = load_plan(plan_path)
    folder = out or Path("runs") / "studies" / plan.name
    folder.mkdir(parents=True, exist_ok=True)
    kept = folder / PLAN_FILE
    text = plan_path.read_text(encoding="utf-8")
    if kept.exists() and kept.read_text(encoding="utf-8") != text:
        _require_extension(load_plan(kept), plan, folder)
        kept.write_text(text, encoding="utf-8")
    if not kept.exists():
        kept.write_text(text, encoding="utf-8")
    # Paths in the file are relative to it; the folder remembers where that was.
    origin = {"directory": str(plan_path.resolve().parent)}
    (folder / ORIGIN_FILE).write_text(json.dumps(origin) + "\n", encoding="utf-8")
    _write_specs(folder_plan(folder), folder, plan_path.resolve().parent)
    return folder


def _require_extension(old: Plan, new: Plan, folder: Path) -> None:
    """A changed study file may only add seeds, learning rates or variants: what was run keeps
    its meaning (same base, budget, options, data and variants)."""
    same = ("name", "base", "budget", "train", "data", "tokenizer", "extrapolate")
    changed = [f for f in same if getattr(old, f) != getattr(new, f)]
    kept = {v.name: v for v in new.variants}
    changed += [f"variant {v.name}" for v in old.variants if kept.get(v.name) != v]
    if changed:
        raise TfsError(
            f"{folder} holds a study this file changes ({', '.join(changed)}); a study can "
            "only gain seeds, learning rates or variants. Give another --out for a new one"
        )


def folder_plan(folder: Path) -> Plan:
    """The plan a study folder holds, its relative paths taken from where the file was."""
    plan = load_plan(folder / PLAN_FILE)
    origin = folder / ORIGIN_FILE
    if plan.data is None or Path(plan.data).is_absolute() or not origin.is_file():
        return plan
    directory = Path(json.loads(origin.read_text(encoding="utf-8"))["directory"])
    return attrs.evolve(plan, data=str(directory / plan.data))


def _write_specs(plan: Plan, folder: Path, relative_to: Path) -> None:
    registry = default_registry()
    base_path = relative_to / plan.base
    if base_path.is_file():
        base = load_spec(base_path, registry)
    else:
        base = DecoderSpec.preset(plan.base, registry)
    (folder / "specs").mkdir(exist_ok=True)
    for variant in plan.variants:
        try:
            spec = variant.spec(base)
        except (TypeError, ValueError) as err:
            raise TfsError(f"variant {variant.name!r}: {err}") from None
        path = folder / "specs" / f"{variant.name}.toml"
        path.write_text(spec.to_toml(), encoding="utf-8")


def open_study(folder: Path, storage: str | None = None) -> Any:
    """The Optuna study of ``folder`` (created on first use)."""
    optuna = _optuna()
    plan = folder_plan(folder)
    url = storage or f"sqlite:///{(folder / STORAGE_FILE).resolve()}"
    every, grace = heartbeat()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
        rdb = optuna.storages.RDBStorage(url, heartbeat_interval=every, grace_period=grace,
                                         engine_kwargs=kwargs)  # fmt: skip
        return optuna.create_study(study_name=plan.name, storage=rdb, load_if_exists=True,
                                   direction="minimize")  # fmt: skip


def states(study: Any, plan: Plan) -> dict[str, str]:
    """Each cell's state: ``done``, ``running`` or ``left``."""
    optuna = _optuna()
    state = {cell.key: "left" for cell in plan.cells()}
    for trial in study.get_trials(deepcopy=False):
        key = trial.user_attrs.get("cell")
        if key not in state:
            continue
        if trial.state == optuna.trial.TrialState.COMPLETE:
            state[key] = "done"
        elif trial.state == optuna.trial.TrialState.RUNNING and state[key] == "left":
            state[key] = "running"
    return state


def work(folder: Path, storage: str | None = None, say: Any = print) -> int:
    """Run cells until none is left; returns how many this worker completed."""
    optuna = _optuna()
    plan = folder_plan(folder)
    study = open_study(folder, storage)
    completed = 0
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        now = states(study, plan)
        if "left" not in now.values():
            if "running" not in now.values():
                return completed
            time.sleep(heartbeat()[0])  # another worker's trial may yet fail
            continue
        finished: list[float] = []

        def objective(trial: Any, finished: list[float] = finished) -> float:
            finished.append(_objective(trial, study, plan, folder, say))
            return finished[-1]

        # An error in a trial (bad data, a spec that cannot build) stops this worker with it:
        # it would only repeat. A killed worker's trial is retried through its heartbeat.
        study.optimize(objective, n_trials=1)
        completed += len(finished)
        _progress(study, plan, say)


def _claim(trial: Any, study: Any, plan: Plan) -> Cell | None:
    """Take the first cell nobody has done or is doing; on a tie the lower trial number wins."""
    optuna = _optuna()
    taken: set[str] = set()
    for _ in range(len(plan.cells()) + 1):
        now = states(study, plan)
        free = [c for c in plan.cells() if now[c.key] == "left" and c.key not in taken]
        if not free:
            return None
        cell = free[0]
        trial.set_user_attr("cell", cell.key)
        rivals = [t.number for t in study.get_trials(deepcopy=False,
                                                     states=(optuna.trial.TrialState.RUNNING,))
                  if t.user_attrs.get("cell") == cell.key and t.number != trial.number]  # fmt: skip
        if not rivals or trial.number < min(rivals):
            return cell
        taken.add(cell.key)
    return None


def _objective(trial: Any, study: Any, plan: Plan, folder: Path, say: Any) -> float:
    optuna = _optuna()
    cell = _claim(trial, study, plan)
    if cell is None:
        raise optuna.TrialPruned("no cell left")
    for key, value in (("variant", cell.variant), ("lr", cell.lr), ("seed", cell.seed)):
        trial.set_user_attr(key, value)
    say(f"trial {trial.number}: {cell.key} starting")
    record = run_cell(plan, folder, cell)
    for key, value in record.items():
        trial.set_user_attr(key, value)
    return float(record["val_loss"])


def run_cell(plan: Plan, folder: Path, cell: Cell) -> dict[str, Any]:
    """Train one cell (resuming a half-done one) and return what the report needs."""
    spec_path = folder / "specs" / f"{cell.variant}.toml"
    spec = load_spec(spec_path, default_registry())
    out = folder / "trials" / cell.key
    context = int(plan.train.get("context") or spec.n_ctx)
    batch = int(plan.train.get("batch_size", 16))
    flops_per_token = _flops_per_token(spec, context)
    steps = _steps(plan, batch * context, flops_per_token)
    resume = out.is_dir() and run_folder.latest(out) is not None
    if out.is_dir() and not resume:
        shutil.rmtree(out)  # a start that died before its first checkpoint: nothing to keep
    config = plan.train_config(cell, spec_path, out, steps)
    if resume:
        config = attrs.evolve(config, resume=True)
    held: list[Any] = []
    peak = peak_bytes(lambda: held.append(run_trainer(config)), torch.device("cpu"))
    result, trainer = held[0]
    record: dict[str, Any] = {
        "val_loss": result.val_loss, "val_accuracy": result.val_accuracy, "steps": steps,
        "tokens": steps * batch * context, "tokens_per_s": result.tokens_per_s,
        "peak_bytes": peak, "context": context,
    }  # fmt: skip
    record |= measured(trainer.decoder, out, record)
    if plan.extrapolate:
        record["extrapolation"] = _extrapolate(trainer, spec.n_ctx, context, plan.extrapolate)
    return record


def _flops_per_token(spec: DecoderSpec, context: int) -> float:
    with torch.device("meta"):
        decoder = build_decoder(spec)
    return training_flops_per_token(decoder, context)


def measured(decoder: Any, out: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Parameters, FLOPs per token and the loss history, from the model as trained (the
    tokenizer may have replaced the spec's vocabulary, so the spec alone would be wrong)."""
    context = int(record.get("context") or decoder.spec.n_ctx)
    flops = training_flops_per_token(decoder, context)
    tokens_per_step = record["tokens"] // record["steps"]
    return {"parameters": sum(decoder.parameter_counts().values()), "flops_per_token": flops,
            "history": _history(out, tokens_per_step, flops)}  # fmt: skip


def _steps(plan: Plan, tokens_per_step: int, flops_per_token: float) -> int:
    kind, amount = plan.budget
    if kind == "steps":
        return max(1, int(amount))
    if kind == "tokens":
        return max(1, math.ceil(amount / tokens_per_step))
    return max(1, math.ceil(amount / (flops_per_token * tokens_per_step)))


def _history(out: Path, tokens_per_step: int, flops_per_token: float) -> list[dict[str, Any]]:
    return [{"step": r["step"], "val_loss": r["val_loss"], "seconds": r.get("train_seconds", 0.0),
             "flops": r["step"] * tokens_per_step * flops_per_token}
            for r in read_log(out / "log.jsonl") if "val_loss" in r]  # fmt: skip


def _extrapolate(trainer: Any, n_ctx: int, context: int, factor: float) -> dict[str, Any]:
    longer = int(context * factor)
    if longer > n_ctx:
        return {"context": longer, "val_loss": None,
                "why": f"n_ctx {n_ctx} holds no position past {n_ctx - 1}"}  # fmt: skip
    loss, _ = trainer.evaluate(context=longer)
    return {"context": longer, "val_loss": loss}


def _progress(study: Any, plan: Plan, say: Any) -> None:
    now = states(study, plan)
    counts = {s: list(now.values()).count(s) for s in ("done", "running", "left")}
    best = _best(study)
    say(f"{counts['done']}/{len(now)} done, {counts['running']} running, {counts['left']} left"
        + (f"; best so far {best}" if best else ""))  # fmt: skip


def _best(study: Any) -> str:
    optuna = _optuna()
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not done:
        return ""
    top = min(done, key=lambda t: t.value)
    return f"{top.user_attrs['cell']} (validation loss {top.value:.4f})"


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's experimental-feature warnings off for the block."""
    optuna = _optuna()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def trial_records(folder: Path, storage: str | None = None) -> list[dict[str, Any]]:
    """Every completed trial's record (for the report)."""
    optuna = _optuna()
    with quiet_optuna():
        study = open_study(folder, storage)
        done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    records = [json.loads(json.dumps(dict(t.user_attrs))) for t in done]
    context = folder_plan(folder).train.get("context")
    for record in records:
        # What was trained, measured again (older records counted the spec's vocabulary).
        record.setdefault("context", context)
        saved = run_folder.latest(folder / "trials" / record["cell"])
        if saved is not None:
            decoder = load_checkpoint(saved.model).decoder
            record |= measured(decoder, folder / "trials" / record["cell"], record)
    return records
