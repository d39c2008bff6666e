"""Door 3 (a class checked directly), expected failures, and the report's table and JSON."""

import json

import torch
from torch import nn

import transformer_from_scratch as tfs
from tests.conformance.broken import DropoutInEval
from transformer_from_scratch import conformance


class MyMLP(nn.Module):
    """A learner's own two-layer MLP, not yet packaged as a plugin."""

    def __init__(self, dims: tfs.Dims) -> None:
        super().__init__()
        self.w_in = nn.Parameter(torch.randn(dims.d_model, dims.d_mlp) * 0.1)
        self.w_out = nn.Parameter(torch.randn(dims.d_mlp, dims.d_model) * 0.1)
        self.hook_pre, self.hook_post = tfs.HookPoint(), tfs.HookPoint()

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        pre = self.hook_pre(residual @ self.w_in)
        return self.hook_post(torch.relu(pre)) @ self.w_out


def test_a_class_can_be_checked_directly() -> None:
    report = conformance.check(MyMLP, kind="mlp")
    assert report.ok, str(report)
    assert {r.subject for r in report.results} == {"mlp/my_mlp"}
    assert "check_learns_nonlinear" in {r.check for r in report.results}


def test_a_broken_class_fails_with_a_message() -> None:
    report = conformance.check(DropoutInEval, kind="mlp")
    failed = {r.check: r.message for r in report.failed}
    assert "is dropout or sampling left on?" in failed["check_eval_deterministic"]


def test_expected_failures_are_reported_never_hidden() -> None:
    reason = "dropout kept on deliberately"
    report = conformance.check(
        DropoutInEval, kind="mlp", expected_failures={"check_eval_deterministic": reason}
    )
    [result] = [r for r in report.results if r.check == "check_eval_deterministic"]
    assert result.outcome is conformance.Outcome.EXPECTED_FAILURE
    assert reason in result.message
    assert "x" in report.table().splitlines()[1]


def test_an_expected_failure_that_passes_is_a_failure() -> None:
    report = conformance.check(
        MyMLP, kind="mlp", expected_failures={"check_finite": "thought it overflowed"}
    )
    [result] = report.failed
    assert result.outcome is conformance.Outcome.UNEXPECTED_PASS
    assert "remove it" in result.message


def test_not_applicable_checks_say_why() -> None:
    report = conformance.check(MyMLP, kind="mlp")
    skipped = [r for r in report.results if r.outcome is conformance.Outcome.NOT_APPLICABLE]
    assert skipped
    assert all(r.message.startswith("not applicable: ") for r in skipped)


def test_report_counts_table_and_json_agree() -> None:
    report = conformance.check(DropoutInEval, kind="mlp")
    data = json.loads(report.to_json())
    assert data["counts"] == report.counts()
    assert len(data["results"]) == len(report.results) == sum(report.counts().values())
    assert report.summary().startswith(f"{len(report.results)} checks run: ")
    row = report.table().splitlines()[1]
    assert row.startswith("mlp/dropout_in_eval") and "F" in row
