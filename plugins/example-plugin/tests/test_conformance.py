"""The example plugin's own tests: door 2 of the conformance suite, as a plugin author writes it."""

import pytest

from transformer_from_scratch import conformance


@pytest.mark.parametrize(
    ("subject", "check", "expected"),
    conformance.pytest_params(distribution="tfs-example-plugin"),
)
def test_conforms(
    subject: conformance.Subject, check: conformance.Check, expected: str | None
) -> None:
    conformance.assert_conforms(subject, check, expected)
