"""The suite has teeth: every deliberately broken implementation is caught by name, and every
correct one that merely differs from the built-ins passes."""

import pytest

import transformer_from_scratch as tfs
from tests.conformance.broken import BROKEN
from tests.conformance.correct import CORRECT
from transformer_from_scratch import conformance
from transformer_from_scratch.core.registry import Provider


@pytest.fixture(scope="module")
def test_registry() -> tfs.Registry:
    registry = tfs.load_registry(autoload=False)
    extra = tfs.Registry(Provider("broken-and-correct", "tests", "0"))
    for kind, name, factory, capabilities, *_ in BROKEN + CORRECT:
        validate = getattr(factory, "validate", None)
        extra.register(kind, name, factory, capabilities=capabilities, validate=validate)
    registry.merge(extra)
    return registry


@pytest.mark.parametrize(
    ("kind", "name", "must_catch"),
    [(k, n, c) for k, n, _, _, c in BROKEN],
    ids=[f"{k}/{n}" for k, n, *_ in BROKEN],
)
def test_each_broken_implementation_is_caught_by_the_named_checks(
    test_registry: tfs.Registry, kind: str, name: str, must_catch: set[str]
) -> None:
    checks = [c for c in conformance.CHECKS if c.name in must_catch]
    assert {c.name for c in checks} == must_catch, "a named check that does not exist"
    results = [
        conformance.run_one(subject, check)
        for subject in conformance.select(test_registry, [f"{kind}/{name}"])
        for check in checks
        if subject.kind in check.kinds
    ]
    caught = {r.check for r in results if r.failed}
    assert must_catch <= caught, f"not caught by {sorted(must_catch - caught)}"
    for result in results:
        assert not result.failed or result.message, f"{result.check} failed without saying why"


@pytest.mark.parametrize(
    ("kind", "name"), [(k, n) for k, n, *_ in CORRECT], ids=[f"{k}/{n}" for k, n, *_ in CORRECT]
)
def test_each_correct_variant_passes(test_registry: tfs.Registry, kind: str, name: str) -> None:
    report = conformance.run(conformance.select(test_registry, [f"{kind}/{name}"]))
    assert report.ok, report.details()


def _run_check(registry: tfs.Registry, name: str, check_name: str) -> conformance.CheckResult:
    """One named check on one implementation (its default options)."""
    [subject] = conformance.select(registry, [name])
    return conformance.run_one(subject, next(c for c in conformance.CHECKS if c.name == check_name))


def test_a_float32_internal_kernel_passes_and_is_told_why_it_is_not_float64_exact(
    test_registry: tfs.Registry,
) -> None:
    result = _run_check(test_registry, "float32_softmax", "check_gradients_match_reference")
    assert result.outcome is conformance.Outcome.PASSED
    assert "not float64" in result.message and "lower precision" in result.message


def test_autograd_errors_are_put_as_the_property(test_registry: tfs.Registry) -> None:
    report = conformance.run(conformance.select(test_registry, ["detached_values"]))
    messages = {r.check: r.message for r in report.failed}
    assert messages["check_gradients_match_reference"] == (
        "no gradient reaches the values: is something detached?"
    )
    assert "RuntimeError" not in " ".join(messages.values())


def test_a_broken_partner_is_blamed_not_the_correct_subject(test_registry: tfs.Registry) -> None:
    [kernel] = conformance.select(test_registry, ["tiled_rescaled"])
    check = next(c for c in conformance.CHECKS if c.name == "check_combinations_with_plugins")
    result = conformance.run_one(kernel, check)
    assert result.outcome is conformance.Outcome.PASSED, result.message
    assert "positional/log_distance_bias is at fault" in result.message
    [broken] = conformance.select(test_registry, ["log_distance_bias"])
    assert conformance.run_one(broken, check).failed


def test_the_built_in_flash_runs_several_tiles_and_every_window() -> None:
    ids = {s.id for s in conformance.select(names=["flash"])}
    assert ids == {
        "attention_kernel/flash",
        "attention_kernel/flash[tile=4]",
        *(f"attention_kernel/flash[tile=4,window={w}]" for w in conformance.WINDOWS),
    }
    assert min(conformance.WINDOWS) == 1 and max(conformance.WINDOWS) > 600


def test_declared_options_reach_pytest_params() -> None:
    ids = {p.id for p in conformance.pytest_params(names=["materialized"])}
    assert "attention_kernel/materialized[block=4,window=1]/check_matches_reference" in ids
    assert "attention_kernel/materialized[block=4]/check_matches_reference" in ids
    assert "attention_kernel/materialized/check_matches_reference" in ids


def test_learning_checks_run_once_per_implementation() -> None:
    [variant] = conformance.select(names=["materialized"], options={"window": 3})
    check = next(c for c in conformance.CHECKS if c.name == "check_decoder_trains")
    result = conformance.run_one(variant, check)
    assert result.outcome is conformance.Outcome.NOT_APPLICABLE
    assert "default options" in result.message


def test_check_options_that_the_factory_does_not_take_are_refused() -> None:
    registry = tfs.Registry()
    with pytest.raises(tfs.TfsError, match=r"check_options\[0\]\.tyle.*did you mean 'tile'"):
        from transformer_from_scratch.components.flash import Flash

        registry.register("attention_kernel", "mine", Flash, check_options=[{"tyle": 4}])


def test_autograd_errors_from_any_kind_are_put_in_words(test_registry: tfs.Registry) -> None:
    report = conformance.run(conformance.select(test_registry, ["no_grad_mlp"]))
    messages = {r.check: r.message for r in report.failed}
    assert messages["check_gradient_reaches_every_parameter"].startswith(
        "its output has no gradient at all: is something computed under torch.no_grad()"
    )


def test_a_part_with_no_dropout_of_its_own_is_told_not_failed(test_registry: tfs.Registry) -> None:
    result = _run_check(test_registry, "without_dropout", "check_dropout_while_training")
    assert result.outcome is conformance.Outcome.NOT_APPLICABLE
    assert "drops nothing itself" in result.message and "validate()" in result.message


def test_a_part_refusing_the_other_sizes_is_checked_at_sizes_it_accepts(
    test_registry: tfs.Registry,
) -> None:
    result = _run_check(test_registry, "heads_as_wide_as_the_model", "check_other_sizes")
    assert result.outcome is conformance.Outcome.PASSED
    assert "it refuses the other sizes" in result.message
    assert "must equal d_model = 20" in result.message
    assert "heads as wide as the model" in result.message


# Checks proven elsewhere, with where: every other check must catch a broken example here.
PROVEN_ELSEWHERE = {
    "check_moves_device": "needs a CUDA device; without one it says so (not applicable)",
    "check_combinations_with_plugins": "needs installed distributions: "
    "tests/cli/test_check_cli.py and test_a_broken_partner_is_blamed_not_the_correct_subject",
}


def test_every_check_has_teeth() -> None:
    """A check that no broken implementation fails could not fail at all."""
    named = set().union(*(must_catch for *_, must_catch in BROKEN))
    toothless = {c.name for c in conformance.CHECKS} - named - PROVEN_ELSEWHERE.keys()
    assert not toothless, f"no broken example is caught by {sorted(toothless)}"
