"""Quality at equal settings: the from-scratch decoder against the plain-PyTorch reference.

    python benchmarks/quality_vs_reference.py [--seeds 5] [--first-seed 0] [--steps 2000]

tinyshakespeare at the character level (65 symbols, the first 90 % to train on, the last 10 % to
validate on) in the setting of ``../shared/data/README.md``: 4 layers, 4 heads, d_model 128,
context 64, batch 12, AdamW (weight decay 0.1 on matrices and the token embedding, none on
biases, gains or position vectors; betas 0.9/0.99), 100 warm-up steps
then cosine from 1e-3 to 1e-4, gradient clipping at 1.0, 2,000 steps, no dropout.

Both models are trained by the same loop below on the same batches (one sampler per seed) and
scored on the same 200 validation batches; only the model differs: the project's GPT-2-shaped
decoder (``materialized`` kernel, its own initialisation) or ``bench.reference.ReferenceGPT``
(``nn.Linear``/``nn.LayerNorm``/``sdpa``, initialised as nanoGPT: N(0, 0.02), zero biases,
residual projections scaled by depth; the project's decoder initialises the same way except its
position vectors, N(0, 0.01) as GPT-2's own code). Several seeds
give the seed noise the difference is judged against.
"""

import argparse
import math
import statistics
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from transformer_from_scratch.bench.reference import ReferenceGPT
from transformer_from_scratch.core.builder import build_decoder
from transformer_from_scratch.core.functional import token_loss
from transformer_from_scratch.core.spec import DecoderSpec
from transformer_from_scratch.training.loop import decays

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
BATCH, CONTEXT, EVAL_BATCHES = 12, 64, 200


def spec(dropout: float) -> DecoderSpec:
    from transformer_from_scratch.components.presets import GPT2

    sizes = {"d_model": 128, "n_layers": 4, "n_heads": 4, "d_head": 32, "d_mlp": 512,
             "d_vocab": 65, "n_ctx": CONTEXT, "dropout": dropout}  # fmt: skip
    return DecoderSpec.from_dict({**GPT2, **sizes})


def load() -> tuple[Tensor, Tensor]:
    text = DATA.read_text(encoding="utf-8")
    symbols = sorted(set(text))
    ids = torch.tensor([symbols.index(c) for c in text], dtype=torch.long)
    cut = int(0.9 * len(ids))
    return ids[:cut], ids[cut:]


def batches(data: Tensor, count: int, seed: int) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(data) - CONTEXT - 1, (count, BATCH), generator=generator)
    return [torch.stack([data[s : s + CONTEXT + 1] for s in row.tolist()]) for row in starts]


def lr_at(step: int, steps: int) -> float:
    if step < 100:
        return 1e-3 * (step + 1) / 100
    progress = (step - 100) / max(1, steps - 100)
    return 1e-4 + 0.5 * (1e-3 - 1e-4) * (1 + math.cos(math.pi * progress))


def decayed(name: str, parameter: Tensor) -> bool:
    """The same rule for both models (``tfs train``'s): matrices and the token embedding are
    decayed; biases, gains and position vectors (the reference's ``wpe``) are not."""
    return decays(name, parameter) and not name.startswith("wpe.")


def optimizer(model: nn.Module) -> torch.optim.AdamW:
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if decayed(n, p)], "weight_decay": 0.1},
        {"params": [p for n, p in named if not decayed(n, p)], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99))


@torch.no_grad()
def evaluate(model: nn.Module, held_out: list[Tensor]) -> float:
    model.eval()
    losses = [token_loss(model(b[:, :-1]), b[:, 1:]).item() for b in held_out]
    model.train()
    return statistics.fmean(losses)


def train(model: nn.Module, data: Tensor, steps: int, seed: int) -> None:
    opt = optimizer(model)
    for step, batch in enumerate(batches(data, steps, seed=1000 + seed)):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps)
        loss = token_loss(model(batch[:, :-1]), batch[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)


def make(name: str, seed: int, dropout: float) -> nn.Module:
    torch.manual_seed(seed)
    if name == "from-scratch":
        return build_decoder(spec(dropout))
    return ReferenceGPT(spec(0.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0, help="to split seeds over processes")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", default="from-scratch,reference", help="which to train")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train_ids, val_ids = load()
    held_out = batches(val_ids, EVAL_BATCHES, seed=7)
    scores: dict[str, list[float]] = {name: [] for name in args.models.split(",")}
    print(f"tinyshakespeare, char level, {args.steps} steps, batch {BATCH} x {CONTEXT}, "
          f"torch {torch.__version__}, {args.threads} thread(s)")  # fmt: skip
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for name in scores:
            start = time.perf_counter()
            model = make(name, seed, 0.0)
            train(model, train_ids, args.steps, seed)
            scores[name].append(evaluate(model, held_out))
            print(f"seed {seed} {name:13} validation loss {scores[name][-1]:.4f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip
    if len(scores) == 2:
        report(scores)


def report(scores: dict[str, list[float]]) -> None:
    ours, ref = scores["from-scratch"], scores["reference"]
    diffs = [a - b for a, b in zip(ours, ref, strict=True)]
    print()
    for name, values in scores.items():
        spread = statistics.stdev(values) if len(values) > 1 else float("nan")
        print(f"{name:13} mean {statistics.fmean(values):.4f}  seed sd {spread:.4f}")
    mean = statistics.fmean(diffs)
    error = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else float("nan")
    print(f"from-scratch - reference, same seed: {mean:+.4f} +- {error:.4f} (standard error)")
    verdict = "not worse beyond seed noise" if mean <= 2 * error else "WORSE beyond seed noise"
    print(f"verdict: {verdict} (worse means the difference exceeds two standard errors)")


if __name__ == "__main__":
    main()
