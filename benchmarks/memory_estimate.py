"""Check the memory estimate against measured peaks: a few training steps of small models, in
one process (a whole copy) and sharded over two gloo processes (fsdp).

Run: ``python benchmarks/memory_estimate.py``. In a fresh process per case, the resident-set
peak after building the model is the baseline; the peak after a few AdamW steps, minus it, is
what training added (gradients, optimizer state, activations; for fsdp also the blocks gathered
whole and one block's unreduced gradient), compared with the estimate of the same things. For
fsdp each process measures its own and the larger is shown.
"""

import json
import os
import re
import subprocess
import sys
import tempfile

CASES = [
    {"d_model": 256, "n_layers": 4, "n_heads": 4, "batch": 32, "context": 256},
    {"d_model": 384, "n_layers": 6, "n_heads": 6, "batch": 16, "context": 256},
    {"d_model": 128, "n_layers": 8, "n_heads": 4, "batch": 32, "context": 512},
]
SHARDED = [
    {"d_model": 512, "n_layers": 8, "n_heads": 8, "batch": 8, "context": 256},
    {"d_model": 512, "n_layers": 8, "n_heads": 8, "batch": 32, "context": 256},
    {"d_model": 384, "n_layers": 6, "n_heads": 6, "batch": 16, "context": 256},
]

CHILD = """
import json, os, resource, sys, torch
import transformer_from_scratch as tfs
from transformer_from_scratch.core import memory
from transformer_from_scratch.core.builder import count_parameters
from transformer_from_scratch.core.functional import next_token_loss
from transformer_from_scratch.training.distributed import join, leave
from transformer_from_scratch.training.sharding import build_sharded
torch.set_num_threads(1)
case, parallel = json.loads(sys.argv[1]), sys.argv[2]
d = case["d_model"]
spec = tfs.DecoderSpec.from_dict({"d_model": d, "n_layers": case["n_layers"], "n_heads":
    case["n_heads"], "d_head": d // case["n_heads"], "d_mlp": 4 * d, "d_vocab": 257,
    "n_ctx": case["context"]})
world = join(torch.device("cpu"), group=parallel == "fsdp")
if parallel == "fsdp":
    decoder = build_sharded(spec, 0, torch.device("cpu"))
else:
    decoder = tfs.build_decoder(spec)
optimizer = torch.optim.AdamW(decoder.parameters())
batch = case["batch"] // world.size
tokens = torch.randint(0, 257, (batch, case["context"] + 1))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
for _ in range(3):
    loss = next_token_loss(decoder(tokens[:, :-1]), tokens[:, 1:])
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=False)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
count = count_parameters(spec)
est = memory.estimate(spec, count.total, batch=batch, context=case["context"], parallel=parallel,
                      world_size=world.size, block_parameters=count.per_layer)
print(json.dumps({"measured": after - before, "estimated": est.total - est.weights}))
leave(world)
"""


def measure(case: dict[str, int], parallel: str, script: str) -> dict[str, int]:
    """The largest process's measured rise and the estimate for it."""
    launch = [sys.executable, script, json.dumps(case), parallel]
    if parallel == "fsdp":
        launch[1:1] = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    out = subprocess.run(launch, check=True, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout  # fmt: skip
    found = [json.loads(text) for text in re.findall(r"\{[^{}]*\}", out)]  # lines may interleave
    return max(found, key=lambda f: f["measured"])


def main() -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as handle:
        handle.write(CHILD)
    print(f"{'case':<52} {'measured MiB':>13} {'estimated MiB':>14} {'ratio':>6}")
    rows = [(c, "ddp") for c in CASES + SHARDED[:2]] + [(c, "fsdp") for c in SHARDED]
    for case, parallel in rows:
        found = measure(case, parallel, handle.name)
        label = ", ".join(f"{k} {v}" for k, v in case.items())
        label += " (fsdp, 2 procs)" if parallel == "fsdp" else ""
        ratio = found["estimated"] / found["measured"]
        print(f"{label:<52} {found['measured'] / 2**20:>13.0f} "
              f"{found['estimated'] / 2**20:>14.0f} {ratio:>6.2f}")  # fmt: skip
    os.unlink(handle.name)


if __name__ == "__main__":
    main()
