"""Check the memory estimate against a measured peak: one training step of a small model.

Run: ``python benchmarks/memory_estimate.py``. In a fresh process per case, the resident-set
peak after building the model is the baseline; the peak after a few AdamW steps, minus it, is
what training added (gradients, optimizer state, activations), compared with the estimate.
"""

import json
import subprocess
import sys

CASES = [
    {"d_model": 256, "n_layers": 4, "n_heads": 4, "batch": 32, "context": 256},
    {"d_model": 384, "n_layers": 6, "n_heads": 6, "batch": 16, "context": 256},
    {"d_model": 128, "n_layers": 8, "n_heads": 4, "batch": 32, "context": 512},
]

CHILD = """
import json, resource, sys, torch
import transformer_from_scratch as tfs
from transformer_from_scratch.core import memory
from transformer_from_scratch.core.builder import count_parameters
from transformer_from_scratch.core.functional import next_token_loss
torch.set_num_threads(1)
case = json.loads(sys.argv[1])
d = case["d_model"]
spec = tfs.DecoderSpec.from_dict({"d_model": d, "n_layers": case["n_layers"], "n_heads":
    case["n_heads"], "d_head": d // case["n_heads"], "d_mlp": 4 * d, "d_vocab": 257,
    "n_ctx": case["context"]})
decoder = tfs.build_decoder(spec)
optimizer = torch.optim.AdamW(decoder.parameters())
tokens = torch.randint(0, 257, (case["batch"], case["context"] + 1))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
for _ in range(3):
    loss = next_token_loss(decoder(tokens[:, :-1]), tokens[:, 1:])
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=False)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
est = memory.estimate(spec, count_parameters(spec).total, batch=case["batch"],
                      context=case["context"])
print(json.dumps({"measured": after - before, "estimated": est.total - est.weights}))
"""


def main() -> None:
    print(f"{'case':<48} {'measured MiB':>13} {'estimated MiB':>14} {'ratio':>6}")
    for case in CASES:
        out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(case)], check=True,
                             capture_output=True, text=True).stdout  # fmt: skip
        found = json.loads(out)
        label = ", ".join(f"{k} {v}" for k, v in case.items())
        ratio = found["estimated"] / found["measured"]
        print(f"{label:<48} {found['measured'] / 2**20:>13.0f} {found['estimated'] / 2**20:>14.0f} "
              f"{ratio:>6.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
