"""``tfs inspect``: pictures of what a trained model does with a prompt.

Attention patterns for every layer and head, the logit lens, and (with ``--patch``) an
activation-patching grid, as PNGs, plus every number behind them as JSON.
"""

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from transformer_from_scratch.core.activations import ActivationCache
from transformer_from_scratch.core.decoder import Decoder
from transformer_from_scratch.core.errors import TfsError
from transformer_from_scratch.generation.loading import load_for_generation
from transformer_from_scratch.interp import logit_difference, patch, plots
from transformer_from_scratch.training.tokenizers import Tokenizer

# How a token is written on an axis: visible whitespace, short.
_VISIBLE = {" ": "␣", "\n": "⏎", "\t": "⇥"}


def add_commands(sub: Any) -> None:
    """Register ``inspect``."""
    p = sub.add_parser("inspect", help="draw attention patterns, the logit lens and patching")
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="a model file or a run folder (its latest checkpoint)")  # fmt: skip
    p.add_argument("--prompt", required=True, help="the text to look at")
    p.add_argument("--out", type=Path, default=Path("inspect"), metavar="DIR",
                   help="where the PNGs and inspect.json go (default: ./inspect)")  # fmt: skip
    p.add_argument(
        "--patch",
        nargs=2,
        metavar=("CLEAN", "CORRUPT"),
        help="two prompts of the same length in tokens whose next tokens differ: patch the "
        "residual stream from CLEAN into CORRUPT, layer by position",
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        default=32,
        help="keep the prompt's last N tokens (default 32; pictures get crowded)",
    )
    p.set_defaults(run=run_inspect)


def label(tokenizer: Tokenizer, token: int) -> str:
    """A token as written on a picture's axis."""
    text = tokenizer.decode([token])
    return "".join(_VISIBLE.get(ch, ch) for ch in text) or f"<{token}>"


def _encode(decoder: Decoder, tokenizer: Tokenizer, text: str, limit: int) -> torch.Tensor:
    ids = tokenizer.encode(text)
    if not ids:
        raise TfsError("the prompt is empty once encoded; give some text")
    keep = min(limit, decoder.spec.n_ctx)
    if len(ids) > keep:
        print(f"the prompt is {len(ids)} tokens; keeping its last {keep}")
        ids = ids[-keep:]
    return torch.tensor([ids])


def run_inspect(args: argparse.Namespace) -> int:
    """Write the pictures and the numbers; print where they went."""
    if args.max_tokens < 1:
        raise TfsError(f"--max-tokens must be at least 1, got {args.max_tokens}")
    decoder, tokenizer = load_for_generation(args.checkpoint)
    tokens = _encode(decoder, tokenizer, args.prompt, args.max_tokens)
    labels = [label(tokenizer, int(t)) for t in tokens[0]]
    with torch.no_grad():
        logits, cache = decoder.run_with_cache(tokens)
    args.out.mkdir(parents=True, exist_ok=True)
    numbers: dict[str, Any] = {"prompt": args.prompt, "tokens": tokens[0].tolist(),
                               "labels": labels}  # fmt: skip
    written = [_patterns(cache, decoder, labels, args.out, numbers)]
    written.append(_lens(cache, tokenizer, labels, args.out, numbers))
    numbers["next"] = _next(logits[0, -1], tokenizer)
    if args.patch:
        written.append(
            _patching(decoder, tokenizer, args.patch, args.max_tokens, args.out, numbers)
        )
    (args.out / "inspect.json").write_text(json.dumps(numbers, indent=1) + "\n", encoding="utf-8")
    for path in [p for p in written if p is not None] + [args.out / "inspect.json"]:
        print(f"wrote {path}")
    shown = ", ".join(f"{n['token']!r} {n['probability']:.0%}" for n in numbers["next"][:3])
    print(f"next token: {shown}")
    return 0


def _patterns(
    cache: ActivationCache, decoder: Decoder, labels: list[str], out: Path, numbers: dict[str, Any]
) -> Path | None:
    names = [f"blocks.{i}.attn.hook_pattern" for i in range(len(decoder.blocks))]
    if any(name not in cache for name in names):
        print("no attention patterns: the model's attention kernel is approximate")
        return None
    patterns = torch.stack([cache[name][0] for name in names])  # [layer head query key]
    numbers["patterns"] = patterns.round(decimals=4).tolist()
    path = out / "attention.png"
    plots.attention_patterns(patterns, labels, path, "attention patterns")
    return path


def _lens(
    cache: ActivationCache, tokenizer: Tokenizer, labels: list[str], out: Path,
    numbers: dict[str, Any],
) -> Path:  # fmt: skip
    probs = torch.softmax(cache.logit_lens()[:, 0].float(), dim=-1)  # [layer+1 pos vocab]
    top_probs, top_ids = probs.max(dim=-1)
    tokens = [[label(tokenizer, int(t)) for t in row] for row in top_ids]
    rounded = top_probs.round(decimals=4).tolist()
    numbers["logit_lens"] = {"top_tokens": tokens, "top_probabilities": rounded}
    path = out / "logit_lens.png"
    plots.logit_lens(tokens, top_probs, labels, path, "logit lens: the top next-token prediction")
    return path


def _next(logits: torch.Tensor, tokenizer: Tokenizer, k: int = 5) -> list[dict[str, Any]]:
    probs = torch.softmax(logits.float(), dim=-1)
    top = probs.topk(min(k, probs.numel()))
    return [{"token": tokenizer.decode([int(i)]), "id": int(i), "probability": round(float(p), 4)}
            for p, i in zip(top.values, top.indices, strict=True)]  # fmt: skip


def _patching(
    decoder: Decoder, tokenizer: Tokenizer, prompts: list[str], limit: int, out: Path,
    numbers: dict[str, Any],
) -> Path:  # fmt: skip
    clean, corrupt = (_encode(decoder, tokenizer, text, limit) for text in prompts)
    if clean.shape != corrupt.shape:
        raise TfsError(
            f"--patch needs two prompts of the same length in tokens; CLEAN has "
            f"{clean.shape[1]} and CORRUPT {corrupt.shape[1]}"
        )
    with torch.no_grad():
        right, wrong = int(decoder(clean)[0, -1].argmax()), int(decoder(corrupt)[0, -1].argmax())
    if right == wrong:
        raise TfsError(
            f"both prompts predict {tokenizer.decode([right])!r} next, so patching has nothing "
            "to restore; choose prompts whose next tokens differ"
        )
    result = patch(decoder, clean, corrupt, logit_difference(right, wrong), "resid_pre")
    said = f"logit {tokenizer.decode([right])!r} - logit {tokenizer.decode([wrong])!r}"
    numbers["patching"] = {"clean": prompts[0], "corrupt": prompts[1], "metric": said,
                           "grid": result.grid.tolist(), "clean_metric": result.clean,
                           "corrupt_metric": result.corrupted}  # fmt: skip
    path = out / "patching.png"
    labels = [label(tokenizer, int(t)) for t in clean[0]]
    title = f"patching resid_pre from {prompts[0]!r} into {prompts[1]!r}\n(metric: {said})"
    result.plot(path, labels, title)
    return path
