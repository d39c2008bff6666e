"""How reliable are the conformance suite's learning checks? Run each under many seeds.

    python benchmarks/learning_reliability.py [--seeds 20]

Every learning check is run on every registered implementation it applies to, once per seed
(seed changes the initial weights and the training data), and the pass rate is printed.
"""

import argparse
import time

import attrs

from transformer_from_scratch import conformance
from transformer_from_scratch.conformance.results import Outcome

LEARNING = {
    "check_learns_flagged_copy",
    "check_position_reaches_model",
    "check_learns_bigrams",
    "check_learns_nonlinear",
    "check_decoder_trains",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=20)
    args = parser.parse_args()
    checks = [c for c in conformance.CHECKS if c.name in LEARNING]
    start = time.perf_counter()
    print(f"{'implementation':32} {'check':32} passed")
    for subject in conformance.select():
        for check in checks:
            if subject.kind not in check.kinds:
                continue
            outcomes = [
                conformance.run_one(attrs.evolve(subject, seed=seed), check).outcome
                for seed in range(args.seeds)
            ]
            if all(o is Outcome.NOT_APPLICABLE for o in outcomes):
                continue
            passed = sum(o is Outcome.PASSED for o in outcomes)
            print(f"{subject.id:32} {check.name:32} {passed}/{args.seeds}")
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
