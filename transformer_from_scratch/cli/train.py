"""``tfs train`` and ``tfs generate``: the main job, and using what it made."""

import argparse
import sys
from typing import Any

import attrs

from transformer_from_scratch.training.config import TrainConfig
from transformer_from_scratch.training.tokenizers import TOKENIZERS

_DEFAULTS = TrainConfig()


def add_commands(sub: Any) -> None:
    """Register ``tfs train`` and ``tfs generate``."""
    p = sub.add_parser(
        "train",
        help="train a decoder (default: the `small` preset on the Python stdlib)",
        description="Train a decoder. With no options: the `small` preset, byte tokens, the "
        "standard library's source as text, a few minutes on a CPU.",
    )
    add = p.add_argument
    add(
        "--spec",
        default=_DEFAULTS.spec,
        metavar="FILE_OR_PRESET",
        help="spec file or preset (default: %(default)s)",
    )
    add(
        "--data",
        metavar="PATH",
        help="a text file or a folder of text files (default: the Python standard library)",
    )
    add("--tokenizer", choices=TOKENIZERS, default=_DEFAULTS.tokenizer, help="default: %(default)s")
    add(
        "--steps",
        type=int,
        default=_DEFAULTS.steps,
        help="total optimiser steps (default: %(default)s)",
    )
    add(
        "--stop-after",
        type=int,
        metavar="N",
        help="stop this run after N steps (checkpointed; --resume continues)",
    )
    add(
        "--batch-size",
        type=int,
        default=_DEFAULTS.batch_size,
        help="global batch (default: %(default)s)",
    )
    add(
        "--accumulate",
        type=int,
        default=_DEFAULTS.accumulate,
        metavar="N",
        help="passes per optimiser step: each process's share of the batch in N parts whose "
        "gradients add up (less memory, the same training; default: %(default)s)",
    )
    add("--context", type=int, help="tokens per training window (default: the spec's n_ctx)")
    add("--lr", type=float, default=_DEFAULTS.lr, help="peak learning rate (default: %(default)s)")
    add("--min-lr", type=float, help="final learning rate of the cosine (default: lr/10)")
    add(
        "--warmup",
        type=int,
        default=_DEFAULTS.warmup,
        help="linear warm-up steps (default: %(default)s)",
    )
    add(
        "--weight-decay",
        type=float,
        default=_DEFAULTS.weight_decay,
        help="AdamW decay on matrices (default: %(default)s)",
    )
    add(
        "--beta2",
        type=float,
        default=_DEFAULTS.beta2,
        help="AdamW's second-moment decay (default: %(default)s)",
    )
    add(
        "--grad-clip",
        type=float,
        default=_DEFAULTS.grad_clip,
        help="max gradient norm; 0 turns clipping off",
    )
    add("--seed", type=int, default=_DEFAULTS.seed)
    add(
        "--device",
        default=_DEFAULTS.device,
        help="auto, cpu, cuda, cuda:1, ... (default: %(default)s)",
    )
    add(
        "--dtype",
        choices=["float32", "bfloat16"],
        default=_DEFAULTS.dtype,
        help="bfloat16 = autocast",
    )
    add("--compile", action="store_true", help="torch.compile the model")
    add("--parallel", choices=["auto", "ddp", "fsdp"], default=_DEFAULTS.parallel,
        help="under torchrun: ddp keeps a whole copy per process, fsdp shards weights, gradients "
        "and AdamW state over them; auto picks fsdp when a whole copy would not fit "
        "(default: %(default)s)")  # fmt: skip
    add("--activation-checkpointing", action="store_true",
        help="keep only each block's input for the backward pass and recompute the rest "
        "(less memory, about a third more compute)")  # fmt: skip
    add("--out", default=_DEFAULTS.out, metavar="DIR", help="run folder (default: %(default)s)")
    add(
        "--resume", action="store_true", help="continue the run in --out from its latest checkpoint"
    )
    add("--eval-every", type=int, default=_DEFAULTS.eval_every)
    add("--eval-batches", type=int, default=_DEFAULTS.eval_batches)
    add("--checkpoint-every", type=int, default=_DEFAULTS.checkpoint_every)
    add("--log-every", type=int, default=_DEFAULTS.log_every)
    add(
        "--sample-tokens",
        type=int,
        default=_DEFAULTS.sample_tokens,
        help="tokens to generate at the end",
    )
    add("--sample-prompt", help="prompt for the final sample (default: the opening words of the "
        "validation text)")  # fmt: skip
    add("--tensorboard", action="store_true", help="also log to TensorBoard (needs tensorboard)")
    add("--wandb", action="store_true", help="also log to Weights & Biases (needs wandb)")
    add("--quiet", action="store_true", help="no progress bar")
    add("--keep", type=int, default=_DEFAULTS.keep,
        help="keep this run's newest N good checkpoints (default: %(default)s)")  # fmt: skip
    add("--spike-sigma", type=float, default=_DEFAULTS.spike_sigma, metavar="K",
        help="warn when the loss is K standard deviations above its recent mean "
        "(default: %(default)s)")  # fmt: skip
    add("--stop-on-spike", action="store_true", help="stop the run at a loss spike")
    _defaults_shown_not_set(p)
    p.set_defaults(run=run_train)

    g = sub.add_parser("generate", help="generate text from a checkpoint")
    add = g.add_argument
    add(
        "--checkpoint",
        required=True,
        metavar="PATH",
        help="a model.safetensors file, a run folder (its latest checkpoint), or one of its "
        "checkpoint folders (an earlier step)",
    )
    add("--prompt", default="", help="text to continue (default: start from end-of-text)")
    add("--max-new-tokens", type=int, default=200)
    add("--temperature", type=float, default=0.8, help="0 = greedy")
    add("--top-k", type=int)
    add("--top-p", type=float)
    add("--seed", type=int)
    add("--no-cache", action="store_true", help="recompute the whole window for every token")
    g.set_defaults(run=run_generate)


def _defaults_shown_not_set(parser: argparse.ArgumentParser) -> None:
    """Show each option's default in --help, but leave it unset, so a run knows what was given
    (``--resume`` keeps the run's own options and applies only the given ones)."""
    fields = {f.name for f in attrs.fields(TrainConfig)}
    for action in parser._actions:
        if action.dest in fields:
            shown = getattr(_DEFAULTS, action.dest)
            action.help = (action.help or "").replace("%(default)s", str(shown))
            action.default = None


def run_train(args: argparse.Namespace) -> int:
    """Train, then print the validation loss, the checkpoint path and a sample."""
    from transformer_from_scratch.training.loop import train

    fields = {f.name for f in attrs.fields(TrainConfig)}
    options = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if options.get("grad_clip") == 0:
        options["grad_clip"] = None
    result = train(TrainConfig(**options, given=frozenset(options)))
    if not result.main:
        return 0  # another process of a distributed run: rank 0 reports
    print(
        f"\nvalidation loss {result.val_loss:.4f} (nats/token), next-token accuracy "
        f"{result.val_accuracy:.1%} after {result.step} steps in {result.seconds:.0f} s "
        f"({result.tokens_per_s / 1000:.1f}k tok/s while training)"
    )
    print(f"checkpoint: {result.checkpoint}")
    if result.sample:
        print(f"sample:\n{result.sample}")
    return 0


def run_generate(args: argparse.Namespace) -> int:
    """Stream a continuation of the prompt to the terminal."""
    from transformer_from_scratch.generation.generate import (
        GenerationConfig,
        can_cache,
        decode_stream,
        fit_prompt,
        generate,
    )
    from transformer_from_scratch.generation.loading import load_for_generation

    decoder, tokenizer = load_for_generation(args.checkpoint)
    ids = tokenizer.encode(args.prompt) if args.prompt else [tokenizer.eot]
    ids, dropped = fit_prompt(ids, decoder.spec.n_ctx)
    if dropped:
        print(
            f"(the prompt was {dropped} tokens too long for the context window; its first "
            f"{dropped} tokens were dropped)",
            file=sys.stderr,
        )
    if not args.no_cache and not can_cache(decoder):
        print(
            "(this model's attention cannot use a KV cache; recomputing each step)", file=sys.stderr
        )
    config = GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        stop_token=tokenizer.eot,
        use_cache=not args.no_cache,
    )
    # What the model continues: the prompt as cut, marked, when it had to be cut.
    sys.stdout.write("…" + tokenizer.decode(ids) if dropped else args.prompt)
    for piece in decode_stream(generate(decoder, ids, config), tokenizer.decode):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0
