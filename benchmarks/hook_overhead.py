"""No hooks, no cost: training and generation speed with hook points vs. a revision without.

    python benchmarks/hook_overhead.py [--baseline f41fd2b] [--rounds 7] [--threads 1]

Checks the baseline revision (before hook points) out into a temporary git worktree, then times
the same two jobs under each tree in alternating subprocesses (A B A B ...), so both see the same
machine load: a training step of the ``small`` preset (batch 16, context 128, AdamW) and
KV-cached greedy generation of 128 tokens at batch 1. Prints the medians and the ratios.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

JOB = r"""
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
import transformer_from_scratch as tfs
from transformer_from_scratch.generation.generate import GenerationConfig, generate
torch.manual_seed(0)
decoder = tfs.build_decoder("small")
optimizer = torch.optim.AdamW(decoder.parameters(), lr=1e-4)
tokens = torch.randint(0, 256, (16, 129))
def step():
    logits = decoder(tokens[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
    optimizer.zero_grad(); loss.backward(); optimizer.step()
for _ in range(3): step()
start = time.perf_counter()
for _ in range(10): step()
train = 10 * 16 * 128 / (time.perf_counter() - start)
decoder.eval()
config = GenerationConfig(max_new_tokens=128, temperature=0, use_cache=True)
sum(1 for _ in generate(decoder, [0], config))
start = time.perf_counter()
sum(1 for _ in generate(decoder, [0], config))
gen = 128 / (time.perf_counter() - start)
print(json.dumps({"train": train, "generate": gen}))
"""


def run(tree: Path, threads: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree), "TFS_DISABLE_PLUGIN_AUTOLOAD": "1"}
    out = subprocess.run([sys.executable, "-c", JOB, str(threads)], env=env, cwd=tree,
                         capture_output=True, text=True, check=True)  # fmt: skip
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", default="f41fd2b", help="a revision without hook points")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), args.baseline],
                       cwd=ROOT, check=True, capture_output=True)  # fmt: skip
        try:
            runs: dict[str, list[dict[str, float]]] = {"baseline": [], "hooks": []}
            for _ in range(args.rounds):
                runs["baseline"].append(run(base, args.threads))
                runs["hooks"].append(run(ROOT, args.threads))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT,
                           check=False, capture_output=True)  # fmt: skip
    print(f"{args.rounds} alternating rounds, {args.threads} thread(s), baseline {args.baseline}")
    for job in ("train", "generate"):
        old = statistics.median(r[job] for r in runs["baseline"])
        new = statistics.median(r[job] for r in runs["hooks"])
        print(f"{job:9} baseline {old:10.1f} tok/s   with hook points {new:10.1f} tok/s   "
              f"ratio {new / old:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
