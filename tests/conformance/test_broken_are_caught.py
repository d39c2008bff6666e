"""The suite has teeth: every deliberately broken implementation is caught by name."""

import pytest

import transformer_from_scratch as tfs
from tests.conformance.broken import BROKEN
from transformer_from_scratch import conformance
from transformer_from_scratch.core.registry import Provider


@pytest.fixture(scope="module")
def broken_registry() -> tfs.Registry:
    registry = tfs.load_registry(autoload=False)
    broken = tfs.Registry(Provider("broken", "tests", "0"))
    for kind, name, factory, capabilities, _ in BROKEN:
        broken.register(kind, name, factory, capabilities=capabilities)
    registry.merge(broken)
    return registry


@pytest.mark.parametrize(
    ("kind", "name", "must_catch"),
    [(k, n, c) for k, n, _, _, c in BROKEN],
    ids=[f"{k}/{n}" for k, n, *_ in BROKEN],
)
def test_each_broken_implementation_is_caught_by_the_named_checks(
    broken_registry: tfs.Registry, kind: str, name: str, must_catch: set[str]
) -> None:
    subject = conformance.Subject(broken_registry.get(kind, name), broken_registry)
    report = conformance.run([subject])
    caught = {r.check for r in report.failed}
    assert must_catch <= caught, (
        f"not caught by {sorted(must_catch - caught)}; caught by {sorted(caught)}"
    )
    for result in report.failed:
        assert result.message, f"{result.check} failed without saying why"
