"""Door 1: every registered implementation (built-ins and installed plugins) against the suite."""

from typing import Any

import pytest
import torch

from transformer_from_scratch import conformance

# Without a GPU the Triton plugin's kernels run in Triton's interpreter, a Python loop over every
# program instance: training a decoder through it takes about a minute, and the other sizes
# take 20-25 s per option set. Those run with `pytest -m slow` (and on a GPU); every other check
# runs on every option set, and the other sizes on its defaults, in the default run.
INTERPRETED = "tfs-triton-flash"
INTERPRETED_SLOW = {"check_decoder_trains", "check_other_sizes"}


def _interpreted_and_slow(subject: conformance.Subject, check: conformance.Check) -> bool:
    if subject.entry.provider.distribution != INTERPRETED or torch.cuda.is_available():
        return False
    return check.name == "check_decoder_trains" or (
        check.name in INTERPRETED_SLOW and subject.is_variant
    )


def _params() -> list[Any]:
    params = []
    for param in conformance.pytest_params():
        subject, check, _ = param.values
        if _interpreted_and_slow(subject, check):
            param = pytest.param(*param.values, id=param.id, marks=pytest.mark.slow)
        params.append(param)
    return params


@pytest.mark.parametrize(("subject", "check", "expected"), _params())
def test_conforms(
    subject: conformance.Subject, check: conformance.Check, expected: str | None
) -> None:
    conformance.assert_conforms(subject, check, expected)


def test_every_builtin_is_covered_and_none_expects_failure() -> None:
    params = conformance.pytest_params()
    subjects = {p.values[0].id for p in params}
    assert {
        "attention/multi_head",
        "attention_kernel/materialized",
        "norm/layer_norm",
        "unembedding/tied",
    } <= subjects
    assert all(p.values[2] is None for p in params)
