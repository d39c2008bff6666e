"""Door 1: every registered implementation (built-ins and installed plugins) against the suite."""

import pytest

from transformer_from_scratch import conformance


@pytest.mark.parametrize(("subject", "check", "expected"), conformance.pytest_params())
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
