"""Door 2 of the conformance suite: every check, on the CPU through Triton's interpreter."""

import pytest

from transformer_from_scratch import conformance

NO_TRITON = "triton is not installed (pip install -e plugins/triton-flash)"

pytest.importorskip("triton", reason=NO_TRITON)


@pytest.mark.parametrize(
    ("subject", "check", "expected"),
    conformance.pytest_params(distribution="tfs-triton-flash"),
)
def test_conforms(
    subject: conformance.Subject, check: conformance.Check, expected: str | None
) -> None:
    conformance.assert_conforms(subject, check, expected)
