"""The training loop: AdamW, warm-up + cosine, clipping, validation, checkpoints, exact resume."""

import contextlib
import functools
import json
import math
import os
import shlex
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import attrs
import torch
import torch.distributed as dist
from torch import nn

from transformer_from_scratch.core import memory, sharded, threads
from transformer_from_scratch.core.builder import build_decoder, count_parameters
from transformer_from_scratch.core.checkpoint import load_checkpoint, tied_names
from transformer_from_scratch.core.decoder import Decoder
from transformer_from_scratch.core.errors import CheckpointError, Interrupted, TfsError
from transformer_from_scratch.core.files import sha256
from transformer_from_scratch.core.functional import token_loss
from transformer_from_scratch.core.plugins import default_registry
from transformer_from_scratch.core.spec import DecoderSpec
from transformer_from_scratch.core.validate import load_spec
from transformer_from_scratch.generation.generate import GenerationConfig, generate_text
from transformer_from_scratch.training import state as run_folder
from transformer_from_scratch.training.config import TrainConfig
from transformer_from_scratch.training.data import (
    load_corpus,
    make_tokenizer,
    opening_words,
    token_stream,
)
from transformer_from_scratch.training.distributed import World, join, leave, process_seed
from transformer_from_scratch.training.health import SpikeDetector, unhealthy
from transformer_from_scratch.training.lock import RunLock
from transformer_from_scratch.training.progress import Progress, RunLog, Throughput
from transformer_from_scratch.training.resume import remembered
from transformer_from_scratch.training.schedule import learning_rate
from transformer_from_scratch.training.sharding import (
    build_sharded,
    checkpoint_blocks,
    choose,
    fill,
    whole,
)
from transformer_from_scratch.training.tokenizers import Tokenizer


@attrs.frozen
class TrainResult:
    """What a run ended with."""

    step: int
    val_loss: float
    val_accuracy: float
    checkpoint: Path
    sample: str
    seconds: float
    tokens_per_s: float  # while training: validation, checkpoints and samples left out
    main: bool = True  # False in the other processes of a distributed run (they write nothing)


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU; under torchrun, plain ``cuda`` means the
    GPU of this process's ``LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TfsError(f"--device {name}: no CUDA device is available here; use --device cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device


def resolve_spec(text: str, tokenizer: Tokenizer, context: int | None) -> DecoderSpec:
    """The spec from a preset or file, sized to the tokenizer's vocabulary."""
    registry = default_registry()
    spec = load_spec(text) if Path(text).is_file() else DecoderSpec.preset(text, registry)
    if context is not None and context > spec.n_ctx:
        raise TfsError(
            f"--context {context} is longer than the spec's context window (n_ctx = {spec.n_ctx}); "
            f"use --context {spec.n_ctx} or less, or a spec with a larger n_ctx"
        )
    return spec.evolve(d_vocab=tokenizer.vocab_size)


def _spec_vocab(text: str) -> int:
    """The d_vocab a spec file or preset names, before the tokenizer's size replaces it."""
    spec = load_spec(text) if Path(text).is_file() else DecoderSpec.preset(text)
    return spec.d_vocab


def decays(name: str, parameter: torch.Tensor) -> bool:
    """Whether weight decay applies: to the matrices that multiply activations and to the token
    embedding; not to biases (``b_*``, ``bias``: per-head biases are matrices too), gains and
    other vectors, or position vectors (``positional.*``)."""
    leaf = name.rsplit(".", 1)[-1]
    if parameter.dim() < 2 or leaf == "bias" or leaf.startswith("b_"):
        return False
    return not name.startswith("positional.")


def make_optimizer(decoder: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (see :func:`decays`)."""
    named = list(decoder.named_parameters())
    decay = [p for n, p in named if decays(n, p)]
    rest = [p for n, p in named if not decays(n, p)]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": rest, "weight_decay": 0.0}]  # fmt: skip
    fused = next(decoder.parameters()).device.type == "cuda"
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, config.beta2), fused=fused)


ADVICE = "Try a lower --lr, --grad-clip, or --dtype float32"


# Seconds within which a second signal counts as a repeat of the first (torchrun forwards it).
REPEAT_WINDOW = 2.0


class Trainer:
    """One training run (see :func:`train`)."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.world = join(self.device, group=config.parallel == "fsdp")
        corpus = load_corpus(config.data)
        self.tokenizer = make_tokenizer(config.tokenizer, corpus)
        self.spec = resolve_spec(config.spec, self.tokenizer, config.context)
        self.context = config.context or self.spec.n_ctx
        self.train_ids = token_stream(corpus.train, self.tokenizer)
        self.val_ids = token_stream(corpus.validation, self.tokenizer)
        self._check_lengths()
        self.parallel = "ddp"
        self.memory = self._check_memory()
        self.decoder = self._build()
        self._own_random_stream()
        self.optimizer = make_optimizer(self.decoder, config)
        self.sampler = torch.Generator().manual_seed(config.seed + 1)
        self.step = 0
        self.corpus_description = corpus.description
        self.opening = opening_words(corpus.validation)
        self.log = RunLog(config.out_dir / "log.jsonl", tensorboard=config.tensorboard,
                          wandb=config.wandb, enabled=self.world.main)  # fmt: skip
        self.progress = Progress(config.steps, quiet=config.quiet or not self.world.main)
        self.throughput = Throughput()
        self.last_good: Path | None = None
        self.saved_step: int | None = None
        self.model = self._wrap(self.decoder)
        self.lock = RunLock(config.out_dir)
        self.spikes = SpikeDetector(config.spike_sigma)
        self.interrupted: signal.Signals | None = None  # SIGINT (Ctrl-C) or SIGTERM, once
        self.data_digest = sha256(self.train_ids.numpy().tobytes() + self.val_ids.numpy().tobytes())

    # --- set-up ------------------------------------------------------------------------
    def _check_lengths(self) -> None:
        for name, ids in (("training", self.train_ids), ("validation", self.val_ids)):
            if len(ids) < self.context + 2:
                raise TfsError(
                    f"the {name} data has {len(ids)} tokens, fewer than one window of "
                    f"--context {self.context} + 1; give more text or a shorter --context"
                )

    def _check_memory(self) -> memory.MemoryEstimate | None:
        """Choose ddp or fsdp (``--parallel auto``: fsdp when a whole copy per process would not
        fit); refuse, before allocating, a run that cannot fit; the estimate otherwise."""
        self._check_accumulate()
        count = count_parameters(self.spec)
        if count is None:
            self.parallel = choose(self.config.parallel, None, self.device, self.world.size)
            return None
        batch = max(1, self.config.batch_size // self.world.size // self.config.accumulate)
        need = functools.partial(
            memory.estimate, self.spec, count.total, batch=batch, context=self.context,
            dtype=self.config.dtype, world_size=self.world.size, block_parameters=count.per_layer,
        )  # fmt: skip
        self.parallel = choose(self.config.parallel, need(), self.device, self.world.size)
        return self._require(need(parallel=self.parallel), batch)

    def _check_accumulate(self) -> None:
        parts, size, batch = self.config.accumulate, self.world.size, self.config.batch_size
        if batch % (parts * size):
            raise TfsError(
                f"--batch-size {batch} does not split into --accumulate {parts} equal passes "
                f"in each of {size} process(es): give a batch size divisible by {parts * size}"
            )

    def _require(self, need: memory.MemoryEstimate, batch: int) -> memory.MemoryEstimate:
        memory.require_fits(need, f"training --spec {self.config.spec} at {batch} sequences a pass "
                            f"and --context {self.context} with {self.parallel} over "
                            f"{self.world.size} process(es)", self.device)  # fmt: skip
        return need

    def _build(self) -> Decoder:
        """The decoder, sharded for fsdp (never whole in memory), else whole on the device."""
        bfloat16 = self.config.dtype == "bfloat16"
        if self.parallel == "fsdp":
            if not dist_ready(self.world):
                self.world = join(self.device, group=True)
            decoder = build_sharded(self.spec, self.config.seed, self.device, bfloat16=bfloat16)
        else:
            torch.manual_seed(self.config.seed)
            decoder = build_decoder(self.spec).to(self.device)
        if self.config.activation_checkpointing:
            checkpoint_blocks(decoder)
        return decoder

    def _own_random_stream(self, step: int = 0) -> None:
        """Give each process its own random numbers (dropout masks) once the weights are built
        alike everywhere; one process keeps the stream the build left (runs as before)."""
        if self.world.size > 1:
            torch.manual_seed(process_seed(self.config.seed, self.world.rank, step))

    @property
    def sharded(self) -> bool:
        """Whether the weights are sharded over the processes (fsdp)."""
        return self.parallel == "fsdp"

    def _wrap(self, decoder: Decoder) -> nn.Module:
        model: nn.Module = decoder
        if self.world.size > 1 and not self.sharded:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(decoder, device_ids=ids)
        if self.config.compile:
            model = torch.compile(model)  # type: ignore[assignment]
        return model

    def _take_folder(self, out: Path) -> None:
        """Lock the run folder (the main process) and remove what interrupted saves left."""
        if self.world.main:
            self.lock.acquire()
            if self.lock.taken_over:
                self.progress.warn(f"took over the lock left by {self.lock.taken_over}")
            for path in run_folder.remove_temporary_files(out):
                self.progress.warn(f"removed {path}, left by an interrupted save")

    def start(self, resumed: Sequence[str] = ()) -> None:
        """Take the run folder, tidy it, then begin afresh or resume from its latest checkpoint
        (``resumed``: how the options differ from the run's saved ones, told only once the
        checkpoint is loaded: a refused run has nothing to tell)."""
        out = self.config.out_dir
        self._take_folder(out)
        asked = self.config.spec
        if self.spec.d_vocab != _spec_vocab(asked):
            self.progress.message(f"d_vocab = {self.spec.d_vocab}: the tokenizer's vocabulary "
                                  f"(the spec {asked} says {_spec_vocab(asked)})")  # fmt: skip
        how = f"{self.parallel} over {self.world.size} processes" if self.world.size > 1 else (
            "fsdp in one process" if self.sharded else "one process")  # fmt: skip
        if self.device.type == "cpu":  # (chosen by --threads, else the idle cores: core.threads)
            how += f", {_threads(torch.get_num_threads(), self.world.size > 1)}"
        if self.memory is not None:
            gib = self.memory.total / memory.GiB
            self.progress.message(f"memory estimate: {gib:.2f} GiB per process, {how} "
                                  f"({self.memory.parameters:,} parameters)")  # fmt: skip
        else:  # (a part that cannot be built on the meta device: nothing to count ahead)
            self.progress.message(f"running {how} (no memory estimate: a part of this spec "
                                  "cannot be built without allocating it)")  # fmt: skip
        if self.config.resume:
            self._resume(self._resumable(out), resumed)
            return
        saved = run_folder.latest(out)
        if saved is not None:
            raise TfsError(
                f"{out} already holds a checkpoint (step {saved.step}); pass --resume to continue "
                "it, or choose another --out (nothing was overwritten)"
            )
        folders = run_folder.checkpoint_folders(out)
        if folders:
            raise TfsError(
                f"{out} holds checkpoint folders ({', '.join(f.name for f in folders)}) but no "
                f"{run_folder.LATEST}; pass --resume to continue from the newest intact one, or "
                "choose another --out (nothing was deleted)"
            )

    def _resumable(self, out: Path) -> run_folder.Saved:
        """The checkpoint to resume from: latest.json's, else the newest intact folder."""
        try:
            saved = run_folder.latest(out)
            if saved is not None:
                return saved
            why = f"there is no {run_folder.LATEST}"
        except run_folder.UnreadablePointer as err:
            why = err.reason
        except CheckpointError as err:
            why = str(err)
        recovered = run_folder.recover(out)
        if recovered is None:
            raise TfsError(f"--resume: {out} holds no intact checkpoint to resume from ({why})")
        self.progress.warn(f"{why}; resuming from the newest intact checkpoint instead")
        if self.world.main:
            run_folder.point_at(out, recovered)
        return recovered

    def _stop(self, reason: str, advice: str = "") -> NoReturn:
        """End the run with ``reason``, naming the checkpoint it can go back to."""
        kept = (
            f"the last good checkpoint is {self.last_good}"
            if self.last_good
            else "no checkpoint was written yet"
        )
        raise TfsError(
            f"{reason}; training stopped and {kept} (nothing was overwritten). {advice}".strip()
        )

    def _resume(self, saved: run_folder.Saved, resumed: Sequence[str] = ()) -> None:
        problem = None
        if self.world.main:  # one process reads every file through; the others hear the verdict
            try:
                run_folder.check_pair(saved)
            except CheckpointError as err:
                problem = str(err)
        problem = self.world.first_problem(problem)
        if problem:
            raise CheckpointError(problem)
        _, metadata = run_folder.read_state(saved)
        recorded = metadata.get("data_sha256")
        if recorded is not None and recorded != self.data_digest:
            raise TfsError(
                "--resume refused: the training data differs from the data this run was trained "
                f"on ({metadata.get('corpus', 'recorded in the checkpoint')}); give the same "
                "--data and --tokenizer, or start a new run with another --out"
            )
        if saved.sharded:
            self._load_shards(saved, metadata["optimizer"])
        else:
            self._load_whole(saved)
        tensors, metadata = run_folder.read_state(saved)
        self._restore_random_streams(tensors, saved.step)
        self.step = saved.step
        self.last_good, self.saved_step = saved.model, saved.step
        self.progress = Progress(self.config.steps, start=self.step, quiet=self.progress.quiet)
        dropped = self.log.trim(self.step) if self.world.main else 0
        again = f"; {dropped} log records after it are dropped (they will be run again)"
        for line in resumed:
            self.progress.warn(f"resume: {line}")
        self.progress.message(f"resumed from {saved.model} at step {self.step}"
                              + (again if dropped else ""))  # fmt: skip

    def _same_run(self, spec: DecoderSpec, tokenizer: Any) -> None:
        differences = self.spec.differences(spec)
        if differences:
            rows = "; ".join(f"{path}: now {now}, saved {then}" for path, now, then in differences)
            raise TfsError(f"--resume refused: the spec differs from the checkpoint's ({rows})")
        if tokenizer != self.tokenizer.describe():
            raise TfsError(
                "--resume refused: the tokenizer (or its vocabulary) differs from the checkpoint's"
            )

    def _restore_random_streams(self, tensors: dict[str, torch.Tensor], step: int) -> None:
        """Each process's random numbers where the checkpoint has them for this many processes;
        with another count, fresh streams per process (the run then goes on, not bit for bit)."""
        self.sampler.set_state(tensors["rng.sampler"])
        rows = tensors.get("rng.torch.per_process")
        cuda_rows = tensors.get("rng.cuda.per_process")
        if self.world.size == 1:
            torch.set_rng_state(tensors["rng.torch"])
        elif rows is not None and len(rows) == self.world.size:
            torch.set_rng_state(rows[self.world.rank].clone())
        else:
            self._own_random_stream(step)
        if not torch.cuda.is_available():
            return
        if self.world.size == 1 and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"])
        elif cuda_rows is not None and len(cuda_rows) == self.world.size:
            torch.cuda.set_rng_state(cuda_rows[self.world.rank].clone())

    def _load_whole(self, saved: run_folder.Saved) -> None:
        """Resume from a single-file checkpoint (cut into this process's shards for fsdp)."""
        checkpoint = load_checkpoint(saved.model)
        self._same_run(checkpoint.decoder.spec, checkpoint.tokenizer)
        full = checkpoint.decoder.state_dict()
        targets: dict[str, torch.Tensor] = dict(
            self.decoder.named_parameters(remove_duplicate=False)
        )
        targets |= dict(self.decoder.named_buffers(remove_duplicate=False))
        for name, value in full.items():
            fill(targets[name], value.to(self.device))
        tensors, metadata = run_folder.read_state(saved)
        moments = run_folder.saved_moments(self.decoder, tensors, metadata["optimizer"])
        parameters = dict(self.decoder.named_parameters())
        for name, value in moments.items():
            parameter, key = name.rsplit(".", 1)
            if key != "step":  # cut into this process's shards (fsdp) or copied whole
                moments[name] = fill(torch.zeros_like(parameters[parameter]), value)
        run_folder.restore_by_name(self.decoder, self.optimizer, moments, metadata["optimizer"])

    def _load_shards(self, saved: run_folder.Saved, settings: str) -> None:
        """Resume from a sharded checkpoint, re-cut for this run's processes."""
        record = sharded.read_manifest(saved.model, check_files=False)  # checked in _resume
        spec = DecoderSpec.from_json(record["spec"], source=f"the spec inside {saved.model}")
        self._same_run(spec, json.loads(record["tokenizer"]))
        aliases = tied_names(self.decoder)
        weights = {n: t for n, t in self.decoder.state_dict().items() if n not in aliases}
        alone = not dist_ready(self.world)
        sharded.read_shards(saved.folder, "model", weights, alone=alone)
        self.decoder.load_state_dict(weights, strict=False)
        names = sharded.stored_names(saved.folder, "optimizer")
        moments = run_folder.optimizer_template(self.decoder, names)
        sharded.read_shards(saved.folder, "optimizer", moments, alone=alone)
        run_folder.restore_by_name(self.decoder, self.optimizer, moments, settings)

    # --- one step -----------------------------------------------------------------------
    def batch(self) -> torch.Tensor:
        """This process's slice of the next global batch: windows of ``context + 1`` tokens
        (inputs are the first ``context``, targets the last), from the seeded sampler."""
        count = self.config.batch_size
        span = self.context + 1
        starts = torch.randint(0, len(self.train_ids) - span + 1, (count,), generator=self.sampler)
        windows = self.train_ids[starts[:, None] + torch.arange(span)]
        return windows[self.world.share(count)].long().to(self.device)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bfloat16 autocast when asked; otherwise nothing."""
        if self.config.dtype == "bfloat16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self) -> float:
        """One optimiser step; returns the (all-process mean) loss."""
        lr = learning_rate(self.step, peak=self.config.lr, floor=self.config.final_lr,
                           warmup=self.config.warmup, total=self.config.steps)  # fmt: skip
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        mean_loss = self._gradients(self.batch())
        clip = self.config.grad_clip if self.config.grad_clip is not None else math.inf
        norm = float(whole(torch.nn.utils.clip_grad_norm_(self.decoder.parameters(), clip)))
        if not math.isfinite(norm):
            self.optimizer.zero_grad(set_to_none=True)
            self._stop(
                f"the gradients became {norm} at step {self.step + 1} (the loss was "
                f"{mean_loss:.4g}) and the optimizer step was not taken",
                ADVICE,
            )
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return mean_loss

    def _gradients(self, window: torch.Tensor) -> float:
        """Forward and backward passes over this process's share, in ``accumulate`` equal parts
        whose gradients add up to the whole share's (each part's loss divided by their count);
        the (all-process mean) loss, checked before the optimiser may use the gradients."""
        parts = window.chunk(self.config.accumulate)
        total = torch.zeros((), device=self.device)
        for index, part in enumerate(parts):
            with self._gradient_sync(index == len(parts) - 1), self.autocast():
                loss = token_loss(self.model(part[:, :-1]), part[:, 1:]) / len(parts)
            loss.backward()
            total += loss.detach()
        mean_loss = float(self.world.mean(total))
        self._guard(mean_loss)
        return mean_loss

    @contextlib.contextmanager
    def _gradient_sync(self, now: bool) -> Iterator[None]:
        """Processes average their gradients only after the last pass of a step."""
        if now or self.world.size == 1:
            yield
        elif self.sharded:
            self.decoder.set_requires_gradient_sync(False)  # type: ignore[operator]
            try:
                yield
            finally:
                self.decoder.set_requires_gradient_sync(True)  # type: ignore[operator]
        else:
            with self.model.no_sync():  # type: ignore[operator]
                yield

    # --- validation, checkpoints, sample ---------------------------------------------------
    @torch.no_grad()
    def evaluate(self, context: int | None = None) -> tuple[float, float]:
        """Mean validation loss and next-token accuracy over fixed, evenly spaced windows (of
        the training context, or of ``context`` tokens)."""
        self.decoder.eval()
        count = self.config.eval_batches * self.config.batch_size
        span = (context or self.context) + 1
        last = len(self.val_ids) - span
        starts = torch.linspace(0, last, min(count, last + 1)).long()
        losses, correct, total = [], 0, 0
        for chunk in starts.split(max(1, self.config.batch_size // self.config.accumulate)):
            window = self.val_ids[chunk[:, None] + torch.arange(span)].long().to(self.device)
            with self.autocast():
                logits = self.decoder(window[:, :-1])
            losses.append(float(token_loss(logits, window[:, 1:])) * len(chunk))
            correct += int((logits.argmax(-1) == window[:, 1:]).sum())
            total += window[:, 1:].numel()
        self.decoder.train()
        return sum(losses) / len(starts), correct / total

    def save(self) -> Path:
        """Write a checkpoint (main process only) and remember it as the last good one."""
        if self.saved_step == self.step and self.last_good is not None:
            return self.last_good  # resumed at the end: this step is on disk already
        problem = self.world.first_problem(unhealthy(self.decoder, self.optimizer))
        if problem:
            self._stop(f"not saving a checkpoint at step {self.step}: {problem}")
        out, tokenizer = self.config.out_dir, self.tokenizer.describe()
        streams = self._random_streams()  # every process takes part
        if self.sharded:
            saved = run_folder.save_sharded(out, self.step, self.decoder, self.optimizer,
                                            tokenizer, *self._state(streams), world=self.world,
                                            keep=self.config.keep)  # fmt: skip
            self.last_good = saved.model
        elif self.world.main:
            saved = run_folder.save(out, self.step, self.decoder, tokenizer, *self._state(streams),
                                    keep=self.config.keep)  # fmt: skip
            self.last_good = saved.model
        self.saved_step = self.step
        return self.last_good or out

    def _random_streams(self) -> dict[str, torch.Tensor]:
        """Every process's random-number states, gathered (several processes) for the checkpoint."""
        streams = {"rng.torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            streams["rng.cuda"] = torch.cuda.get_rng_state()
        if self.world.size > 1:
            for name in list(streams):
                streams[f"{name}.per_process"] = self.world.gather(streams[name])
        return streams

    def _state(
        self, streams: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        tensors: dict[str, torch.Tensor] = {}
        optimizer_json = ""
        if not self.sharded:  # sharded runs save the optimizer's shards beside the weights'
            moments, optimizer_json = run_folder.optimizer_by_name(self.decoder, self.optimizer)
            tensors = {f"{run_folder.MOMENTS}{name}": value for name, value in moments.items()}
        tensors = {**tensors, **streams, "rng.sampler": self.sampler.get_state()}
        info = {"optimizer": optimizer_json, "config": self.config.to_json(),
                "corpus": self.corpus_description, "data_sha256": self.data_digest}  # fmt: skip
        return tensors, info

    def sample(self) -> str:
        """A short generated continuation of the configured prompt (by default the opening words
        of the validation text; end-of-text when the tokenizer cannot encode the prompt)."""
        try:
            prompt = self.config.sample_prompt
            if prompt is None:
                prompt = self.opening
            self.tokenizer.encode(prompt)
        except TfsError:
            prompt = ""
        config = GenerationConfig(
            max_new_tokens=self.config.sample_tokens,
            temperature=0.8,
            top_k=40,
            seed=self.config.seed,
            stop_token=self.tokenizer.eot,
        )
        return prompt + "".join(generate_text(self.decoder.eval(), self.tokenizer, prompt, config))

    # --- the run ------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Train to ``--steps`` (or ``--stop-after``), validating and checkpointing on the way."""
        began = time.perf_counter()
        stop = min(self.config.steps, self.step + (self.config.stop_after or self.config.steps))
        self.decoder.train()
        tokens_per_step = self.config.batch_size * self.context
        with self._finish_step_on_interrupt():
            while self.step < stop:
                tick = time.perf_counter()
                loss = self.train_step()
                self._watch_spikes(loss)
                self.throughput.add(tokens_per_step, time.perf_counter() - tick)
                self.progress.update(self.step, loss, self.throughput.recent)
                self._periodic(loss)  # validation and checkpoints: not counted as training
                self._share_cores()
                if self._told_to_stop():
                    self._stop_interrupted()
        val_loss, val_accuracy = self.evaluate()
        self.log.write({"step": self.step, "val_loss": val_loss, "val_accuracy": val_accuracy,
                        "train_seconds": self.throughput.total_seconds})  # fmt: skip
        path = self.save()
        # Sharded weights are gathered by every process together, so all of them sample.
        sampling = self.world.main or self.sharded
        sample = self.sample() if sampling and self.config.sample_tokens else ""
        seconds = time.perf_counter() - began
        return TrainResult(self.step, val_loss, val_accuracy, path, sample, seconds,
                           self.throughput.overall, self.world.main)  # fmt: skip

    @contextlib.contextmanager
    def _finish_step_on_interrupt(self) -> Iterator[None]:
        """The first Ctrl-C or SIGTERM (``kill``, ``timeout``, a scheduler's preemption) lets
        the step finish, then saves; a second stops at once.

        Under torchrun every process gets the signal, often twice (from the terminal or the
        scheduler, and again from torchrun, which forwards it): a repeat within
        ``REPEAT_WINDOW`` seconds counts as the same one. The processes agree after each step
        whether any was signalled (:meth:`_told_to_stop`), so they save the same step together
        within the grace torchrun gives them before it kills them (30 s)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        first_at: list[float] = []

        def handler(signum: int, frame: Any) -> None:
            if self.interrupted:
                if self.world.size == 1 or time.monotonic() - first_at[0] > REPEAT_WINDOW:
                    raise KeyboardInterrupt
                return
            self.interrupted = signal.Signals(signum)
            first_at.append(time.monotonic())
            what = "interrupted" if signum == signal.SIGINT else "terminated (SIGTERM)"
            again = "Ctrl-C" if signum == signal.SIGINT else "the signal"
            if self.world.main:
                self.progress.warn(f"{what}: finishing this step and saving ({again} again to "
                                   "stop at once, without saving)")  # fmt: skip

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, before in previous.items():
                signal.signal(sig, before)

    def _told_to_stop(self) -> bool:
        """Whether this process, or (under torchrun) any process, was signalled to stop."""
        if self.world.size == 1:
            return self.interrupted is not None
        told = torch.tensor([0 if self.interrupted is None else int(self.interrupted)],
                            device=self.world.device)  # fmt: skip
        dist.all_reduce(told, op=dist.ReduceOp.MAX)
        if self.interrupted is None and int(told):
            self.interrupted = signal.Signals(int(told))
        return bool(int(told))

    def _stop_interrupted(self) -> NoReturn:
        path = self.save()
        again = shlex.join(["tfs", "train", "--out", str(self.config.out_dir), "--resume"])
        terminated = self.interrupted == signal.SIGTERM
        told = (
            f"{'terminated (SIGTERM)' if terminated else 'interrupted'} at step {self.step} of "
            f"{self.config.steps}; saved {path}. Continue with: {again}"
        )
        raise Interrupted(told if self.world.main else "", code=143 if terminated else 130)

    def _periodic(self, loss: float) -> None:
        if self.step % self.config.log_every == 0:
            lr = self.optimizer.param_groups[0]["lr"]
            speed = self.throughput.recent
            self.log.write({"step": self.step, "loss": loss, "lr": lr, "tokens_per_s": speed})
            self.throughput.logged()
        if self.step % self.config.eval_every == 0 and self.step < self.config.steps:
            val_loss, accuracy = self.evaluate()
            self.log.write({"step": self.step, "val_loss": val_loss, "val_accuracy": accuracy,
                            "train_seconds": self.throughput.total_seconds})  # fmt: skip
            self.progress.message(
                f"step {self.step}: validation loss {val_loss:.4f}, accuracy {accuracy:.1%}"
            )
        if self.step % self.config.checkpoint_every == 0 and self.step < self.config.steps:
            self.save()

    def _share_cores(self) -> None:
        """Give threads to commands started after this run, and take them back (core.threads)."""
        before = torch.get_num_threads()
        now = threads.share_cores() if self.device.type == "cpu" else None
        if now is not None:
            why = "later commands hold cores" if now < before else "the cores are free again"
            self.progress.message(f"step {self.step}: {_threads(now, False)} ({why})")

    def _guard(self, loss: float) -> None:
        if not math.isfinite(loss):
            self._stop(f"the training loss became {loss} at step {self.step + 1}", ADVICE)

    def _watch_spikes(self, loss: float) -> None:
        spike = self.spikes.observe(self.step, loss)
        if spike is None:
            return
        self.log.write({"step": self.step, "spike": loss, "recent_mean": spike.mean,
                        "recent_std": spike.std})  # fmt: skip
        self.progress.warn(f"warning: {spike}")
        if self.config.stop_on_spike:
            self._stop(f"{spike} (--stop-on-spike)")


def dist_ready(world: World) -> bool:
    """Whether this process is in a process group (torchrun, or fsdp's group of one)."""
    return world.size > 1 or torch.distributed.is_initialized()


def train(config: TrainConfig) -> TrainResult:
    """Run ``config`` to the end (or to ``stop_after``) and return the result.

    With ``resume``, the run's own saved options are used, with the given ones on top.
    """
    return run_trainer(config)[0]


def run_trainer(config: TrainConfig) -> "tuple[TrainResult, Trainer]":
    """:func:`train`, also returning the :class:`Trainer` (its decoder, data and evaluation)."""
    changes: list[str] = []
    if config.resume:
        config, changes = remembered(config)
    trainer = Trainer(config)
    finished = False
    try:
        trainer.start(resumed=changes)
        result = trainer.run()
        finished = True
        return result, trainer
    finally:
        trainer.lock.release()
        leave(trainer.world, together=finished)


def read_log(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a ``log.jsonl``."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)


def _threads(count: int, each: bool) -> str:
    return f"{count} torch thread{'s' if count != 1 else ''}" + (" each" if each else "")
