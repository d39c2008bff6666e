"""Tokens per second generating 256 new tokens, with and without the KV cache.

    python benchmarks/generation_speed.py [--spec small] [--new-tokens 256] [--device cpu]

Uses the preset's shapes with random weights (speed does not depend on the weights) and a
context window large enough that the window never slides. Prints both rates and the speed-up.
"""

import argparse
import time

import attrs
import torch

import transformer_from_scratch as tfs
from transformer_from_scratch.generation.generate import GenerationConfig, generate


def rate(decoder: tfs.Decoder, new_tokens: int, use_cache: bool, repeats: int) -> float:
    """Median tokens/s over ``repeats`` greedy generations from a one-token prompt."""
    config = GenerationConfig(max_new_tokens=new_tokens, temperature=0, use_cache=use_cache)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        produced = sum(1 for _ in generate(decoder, [0], config))
        times.append(time.perf_counter() - start)
        assert produced == new_tokens
    return new_tokens / sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", default="small")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    spec = tfs.DecoderSpec.preset(args.spec)
    spec = attrs.evolve(spec, n_ctx=max(spec.n_ctx, args.new_tokens + 1))
    torch.manual_seed(0)
    decoder = tfs.build_decoder(spec).to(args.device).eval()
    cached = rate(decoder, args.new_tokens, True, args.repeats)
    plain = rate(decoder, args.new_tokens, False, args.repeats)
    print(f"{args.spec} on {args.device}, {args.new_tokens} new tokens")
    print(f"with KV cache    {cached:8.1f} tokens/s")
    print(f"without cache    {plain:8.1f} tokens/s")
    print(f"speed-up         {cached / plain:8.2f}x")


if __name__ == "__main__":
    main()
