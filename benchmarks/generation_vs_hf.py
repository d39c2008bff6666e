"""Generation speed beside Hugging Face's ``generate``, on the same weights.

    python benchmarks/generation_vs_hf.py [--device cpu] [--threads 2] [--rounds 5]

For the ``small`` preset's shapes and GPT-2 small's (124M), a ``transformers`` GPT-2 with
random weights is made, converted with ``from_hf`` (so both hold the same numbers), and each
generates greedily with its KV cache from the same 16-token prompts, at batch 1 and batch 8.
The two alternate, round by round (who goes first alternates too); the ratio is the median of
the rounds' ratios (this machine is shared: a ratio measured side by side is what means
something). Both must produce the same tokens.
"""

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import transformers

import transformer_from_scratch as tfs
from transformer_from_scratch.bench.train import paired_ratios
from transformer_from_scratch.interop import from_hf

SHAPES = {  # preset -> new tokens generated
    "small": 96,
    "gpt2": 64,
}


def hf_model(spec: tfs.DecoderSpec, device: str) -> transformers.GPT2LMHeadModel:
    config = transformers.GPT2Config(
        vocab_size=spec.d_vocab, n_positions=spec.n_ctx, n_embd=spec.d_model,
        n_layer=spec.n_layers, n_head=spec.n_heads, n_inner=spec.d_mlp,
        activation_function="gelu_new",
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).to(device).eval()


@torch.inference_mode()
def ours(decoder: tfs.Decoder, prompt: torch.Tensor, new: int) -> torch.Tensor:
    """Greedy, as ``generate`` does it: ``new`` forward passes (the prompt's, then one per
    token but the last), logits at the last position only (``generate`` keeps one too)."""
    cache = decoder.new_cache()
    token = decoder(prompt, cache=cache, last_only=True)[:, -1].argmax(-1, keepdim=True)
    made = [token]
    for _ in range(new - 1):
        token = decoder(token, cache=cache, last_only=True)[:, -1].argmax(-1, keepdim=True)
        made.append(token)
    return torch.cat(made, dim=1)


@torch.no_grad()
def theirs(model: transformers.GPT2LMHeadModel, prompt: torch.Tensor, new: int) -> torch.Tensor:
    out = model.generate(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                         pad_token_id=0, attention_mask=torch.ones_like(prompt))  # fmt: skip
    return out[:, prompt.shape[1] :]


def timed(run: Callable[[], torch.Tensor]) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    tokens = run()
    return time.perf_counter() - start, tokens


def compare(preset: str, decoder: tfs.Decoder, model: transformers.GPT2LMHeadModel,
            prompt: torch.Tensor, new: int, rounds: int) -> None:  # fmt: skip
    """One row: both generate in turn, ``rounds`` times after a warm-up round."""
    runs: list[tuple[str, Callable[[], torch.Tensor]]] = [
        ("ours", lambda: ours(decoder, prompt, new)),
        ("hf", lambda: theirs(model, prompt, new)),
    ]
    times: dict[str, list[float]] = {"ours": [], "hf": []}
    made: dict[str, torch.Tensor] = {}
    for round_ in range(rounds + 1):  # the first round warms up and is not counted
        for name, run in runs if round_ % 2 == 0 else runs[::-1]:  # who goes first alternates
            seconds, made[name] = timed(run)
            times[name].append(seconds)
    counted = {name: values[1:] for name, values in times.items()}
    batch = prompt.shape[0]
    rate = {k: batch * new / statistics.median(v) for k, v in counted.items()}
    ratio = paired_ratios(counted, "hf")["ours"]  # median of the rounds' ratios
    same = "" if bool((made["ours"] == made["hf"]).all()) else "  (the tokens differ!)"
    print(f"{preset:<8} {batch:>5} {new:>4} {rate['ours']:>11.1f} {rate['hf']:>9.1f} "
          f"{ratio:>6.2f}{same}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"device {args.device}, {args.threads} threads, torch {torch.__version__}, "
          f"transformers {transformers.__version__}, median of {args.rounds} rounds")  # fmt: skip
    print(f"{'shapes':<8} {'batch':>5} {'new':>4} {'ours tok/s':>11} {'HF tok/s':>9} {'ratio':>6}")
    for preset, new in SHAPES.items():
        spec = tfs.DecoderSpec.preset(preset)
        model = hf_model(spec, args.device)
        decoder = from_hf(model).to(args.device)
        for batch in (1, 8):
            gen = torch.Generator().manual_seed(batch)
            prompt = torch.randint(0, spec.d_vocab, (batch, 16), generator=gen).to(args.device)
            compare(preset, decoder, model, prompt, new, args.rounds)


if __name__ == "__main__":
    main()
