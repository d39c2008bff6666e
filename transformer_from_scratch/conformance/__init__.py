"""The shared conformance suite: what each kind promises, checked for any implementation.

Three ways in, one runner::

    from transformer_from_scratch import conformance

    print(conformance.check(MyAttention, kind="attention"))        # a class, in a notebook

    @pytest.mark.parametrize("subject, check, expected",             # a plugin's own tests
                             conformance.pytest_params(distribution="my-plugin"))
    def test_conforms(subject, check, expected):
        conformance.assert_conforms(subject, check, expected)

and ``tfs check`` on the command line.
"""

from transformer_from_scratch.conformance.results import (
    CheckFailed,
    CheckResult,
    NotApplicable,
    Outcome,
    Report,
)
from transformer_from_scratch.conformance.subject import Subject
from transformer_from_scratch.conformance.suite import (
    CHECKS,
    WINDOWS,
    Check,
    assert_conforms,
    check,
    checks_for,
    option_sets,
    pytest_params,
    run,
    run_one,
    select,
)

__all__ = [
    "CHECKS",
    "WINDOWS",
    "Check",
    "CheckFailed",
    "CheckResult",
    "NotApplicable",
    "Outcome",
    "Report",
    "Subject",
    "assert_conforms",
    "check",
    "checks_for",
    "option_sets",
    "pytest_params",
    "run",
    "run_one",
    "select",
]
