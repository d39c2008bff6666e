"""What a check can conclude, and a report of many conclusions (table and JSON)."""

import enum
import json
from collections import Counter

import attrs


class Outcome(str, enum.Enum):
    """The outcome of one check on one implementation."""

    PASSED = "pass"
    FAILED = "FAIL"
    NOT_APPLICABLE = "n/a"
    EXPECTED_FAILURE = "xfail"
    UNEXPECTED_PASS = "XPASS"


_MARKS = {
    Outcome.PASSED: ".",
    Outcome.FAILED: "F",
    Outcome.NOT_APPLICABLE: "-",
    Outcome.EXPECTED_FAILURE: "x",
    Outcome.UNEXPECTED_PASS: "X",
}


class CheckFailed(AssertionError):
    """A promised property does not hold; the message says where and by how much."""


class NotApplicable(Exception):
    """The check does not apply to this implementation; the message says why."""


@attrs.frozen
class CheckResult:
    """One check's conclusion about one implementation (``subject`` is ``kind/name``)."""

    subject: str
    check: str
    outcome: Outcome
    message: str = ""

    @property
    def failed(self) -> bool:
        """A failure, or an expected failure that unexpectedly passed."""
        return self.outcome in (Outcome.FAILED, Outcome.UNEXPECTED_PASS)


@attrs.define
class Report:
    """Results of a conformance run; ``str(report)`` is the table ``tfs check`` prints."""

    results: list[CheckResult] = attrs.field(factory=list)
    order: list[str] = attrs.field(factory=list)  # check names in suite order, for the columns

    @property
    def failed(self) -> list[CheckResult]:
        """The results that count as failures."""
        return [r for r in self.results if r.failed]

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not self.failed

    def counts(self) -> dict[str, int]:
        """How many results of each outcome."""
        counted = Counter(r.outcome.value for r in self.results)
        return {o.value: counted.get(o.value, 0) for o in Outcome}

    def table(self) -> str:
        """Implementations as rows, numbered checks as columns, then the legend.

        A cell is ``.`` pass, ``F`` fail, ``-`` not applicable, ``x`` expected failure, ``X``
        unexpected pass, blank when the check is not one of that kind's.
        """
        subjects = list(dict.fromkeys(r.subject for r in self.results))
        present = {r.check for r in self.results}
        checks = [
            c
            for c in dict.fromkeys([*self.order, *(r.check for r in self.results)])
            if c in present
        ]
        cell = {(r.subject, r.check): _MARKS[r.outcome] for r in self.results}
        width = max((len(s) for s in subjects), default=14)
        header = "implementation".ljust(width) + "".join(
            f"{i:>3}" for i in range(1, len(checks) + 1)
        )
        rows = [
            (
                subject.ljust(width) + "".join(f"{cell.get((subject, c), ''):>3}" for c in checks)
            ).rstrip()
            for subject in subjects
        ]
        legend = [f"{i:>3} {c.removeprefix('check_')}" for i, c in enumerate(checks, 1)]
        marks = "    . pass  F fail  - not applicable  x expected failure  X unexpected pass"
        return "\n".join([header, *rows, "", "checks:", *legend, "", marks])

    def details(self) -> str:
        """One line per failure, expected failure and not-applicable with its reason, and per
        pass that came with a note (``note``)."""
        return "\n".join(
            f"{'note' if r.outcome is Outcome.PASSED else r.outcome.value:5}  {r.subject} "
            f"{r.check}: {r.message}"
            for r in self.results
            if r.outcome is not Outcome.PASSED or r.message
        )

    def summary(self) -> str:
        """``N checks run: P passed, F failed, ...``."""
        counts = self.counts()
        parts = [f"{n} {label}" for label, n in zip(
            ("passed", "failed", "not applicable", "expected failures", "unexpected passes"),
            counts.values(), strict=True) if n]  # fmt: skip
        return f"{len(self.results)} checks run: " + ", ".join(parts or ["none"])

    def __str__(self) -> str:
        body = [self.table(), "", self.summary()]
        if self.details():
            body[2:2] = [self.details(), ""]
        return "\n".join(body)

    def to_json(self) -> str:
        """The same results as JSON: a list of records plus the counts."""
        records = [
            {"implementation": r.subject, "check": r.check, "outcome": r.outcome.value,
             "message": r.message}
            for r in self.results
        ]  # fmt: skip
        return json.dumps({"results": records, "counts": self.counts()}, indent=2)
