"""The suite: which checks apply to which kind, and one runner behind every door.

- the project's own tests and plugin authors' tests: :func:`pytest_params` + :func:`run_one`;
- a learner in a notebook: :func:`check` on a class, before it is packaged;
- the command line: ``tfs check`` (see ``cli/check.py``), through :func:`run`.
"""

import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import torch

from transformer_from_scratch.conformance import (
    checks_attention as att,
)
from transformer_from_scratch.conformance import (
    checks_common as common,
)
from transformer_from_scratch.conformance import (
    checks_decoder as dec,
)
from transformer_from_scratch.conformance import (
    checks_dropout as drop,
)
from transformer_from_scratch.conformance import (
    checks_far as far,
)
from transformer_from_scratch.conformance import (
    checks_gradient as grad,
)
from transformer_from_scratch.conformance import (
    checks_hook_meaning as held,
)
from transformer_from_scratch.conformance import (
    checks_hooks as hooks,
)
from transformer_from_scratch.conformance import (
    checks_incremental as inc,
)
from transformer_from_scratch.conformance import (
    checks_kernel as ker,
)
from transformer_from_scratch.conformance import (
    checks_modes as modes,
)
from transformer_from_scratch.conformance import (
    checks_parts as parts,
)
from transformer_from_scratch.conformance import (
    checks_positional as pos,
)
from transformer_from_scratch.conformance import (
    checks_robust as rob,
)
from transformer_from_scratch.conformance.results import (
    CheckFailed,
    CheckResult,
    NotApplicable,
    Outcome,
    Report,
)
from transformer_from_scratch.conformance.subject import OTHER_SIZES, Subject
from transformer_from_scratch.core.errors import (
    SpecError,
    TfsError,
    did_you_mean,
    unknown_name_message,
)
from transformer_from_scratch.core.plugins import default_registry, load_registry
from transformer_from_scratch.core.registry import Entry, Factory, Provider, Registry
from transformer_from_scratch.core.validate import check_spec

ALL = frozenset(
    [
        "embedding",
        "positional",
        "attention",
        "attention_kernel",
        "mlp",
        "norm",
        "block",
        "unembedding",
    ]
)
ExpectedFailures = Mapping[str, Mapping[str, str]]


@attrs.frozen
class Check:
    """A named property check and the kinds it applies to.

    A ``learning`` check trains something; it runs once per implementation, with its default
    options, not again for each option set it is checked with. For the kinds in ``resized``
    it compares values that depend on the sizes, and :func:`check_other_sizes` runs it again
    at other sizes.
    """

    function: Callable[[Subject], str | None]
    kinds: frozenset[str]
    learning: bool = False
    resized: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        """The function's name, ``check_...``."""
        return self.function.__name__

    @property
    def description(self) -> str:
        """The first paragraph of the function's docstring, as one line."""
        return " ".join((inspect.getdoc(self.function) or "").split("\n\n")[0].split())


def _on(*kinds: str) -> frozenset[str]:
    return frozenset(kinds)


KERNELS = _on("attention", "attention_kernel")
BUT_KERNELS = ALL - {"attention_kernel"}  # (kernels are compared with the formula instead)
# What a part may refuse in its validate() (a fused projection needs n_heads * d_head ==
# d_model; some attention has no grouped-query form): the other sizes with that given up.
FALLBACK_SIZES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("heads as wide as the model", {"d_model": 24}),
    ("no shared key/value heads", {"d_model": 24, "n_kv_heads": OTHER_SIZES["n_heads"]}),
)


def _in_words_sizes(sizes: Mapping[str, Any]) -> str:
    return (
        f"d_model {sizes['d_model']}, {sizes['n_layers']} layers, {sizes['n_heads']} heads of "
        f"width {sizes['d_head']} sharing {sizes['n_kv_heads']} key/value heads, d_mlp "
        f"{sizes['d_mlp']}, {sizes['d_vocab']} token ids, n_ctx {sizes['n_ctx']}"
    )


def check_other_sizes(subject: Subject) -> str | None:
    """Built at other sizes (d_model 20, two layers, four heads of width 6 sharing two
    key/value heads, d_mlp 36, 17 token ids, n_ctx 40), it passes again every check that
    compares its values: no size is written into the code.

    A part whose validate() refuses those sizes is checked at the nearest it accepts (heads as
    wide as the model, then no shared key/value heads), and told so."""
    sizes, note = _accepted_sizes(subject)
    ran = 0
    for check in CHECKS:
        if subject.kind in check.kinds & check.resized:
            outcome, message = _attempt(subject.resized(sizes), check)
            if outcome is Outcome.FAILED:
                raise CheckFailed(
                    f"at other sizes ({_in_words_sizes(sizes)}), {check.name} fails: "
                    f"{message.rstrip('.')} (is a size written into the code instead of read "
                    "from dims or the inputs' shapes?)"
                )
            ran += outcome is Outcome.PASSED
    if not ran:
        raise NotApplicable("no check of its values applies to it")
    return note


def _accepted_sizes(subject: Subject) -> tuple[dict[str, Any], str | None]:
    """The other sizes, or the first fallback its spec validation accepts."""
    try:
        check_spec(subject.resized(OTHER_SIZES).spec(), subject.registry)
        return dict(OTHER_SIZES), None
    except SpecError as refused:
        first = refused.problems[-1]
    for label, changes in FALLBACK_SIZES:
        sizes = {**OTHER_SIZES, **changes}
        try:
            check_spec(subject.resized(sizes).spec(), subject.registry)
        except SpecError:
            continue
        return sizes, f"it refuses the other sizes ({first}); checked with {label} instead"
    raise CheckFailed(f"it refuses every size tried ({first})")


CHECKS: tuple[Check, ...] = (
    Check(common.check_builds, ALL),
    Check(common.check_output_contract, ALL, resized=ALL),
    Check(common.check_finite, ALL, resized=ALL),
    Check(rob.check_finite_at_scale, ALL),
    Check(rob.check_finite_on_small_inputs, ALL),
    Check(common.check_gradient_reaches_every_parameter, ALL),
    Check(grad.check_backward_is_derivative, BUT_KERNELS),
    Check(common.check_eval_deterministic, ALL),
    Check(modes.check_train_eval_agree, ALL),
    Check(modes.check_grad_modes_agree, ALL),
    Check(modes.check_leaves_inputs_alone, ALL),
    Check(drop.check_dropout_off_in_eval, ALL),
    Check(drop.check_dropout_while_training, _on("attention_kernel", "block")),
    Check(common.check_batch_independent, ALL, resized=ALL),
    Check(common.check_position_wise, _on("embedding", "norm", "mlp", "unembedding"), resized=ALL),
    Check(common.check_float64, ALL),
    Check(common.check_bfloat16, ALL),
    Check(rob.check_follows_device, ALL),
    Check(rob.check_autocast, ALL),
    Check(common.check_safetensors_round_trip, ALL),
    Check(common.check_moves_device, ALL),
    Check(att.check_causal_by_perturbation, KERNELS),
    Check(att.check_causal_by_gradient, KERNELS),
    Check(ker.check_gradient_reaches_inputs, _on("attention_kernel")),
    Check(ker.check_matches_reference, _on("attention_kernel"), resized=ALL),
    Check(ker.check_matches_reference_bfloat16, _on("attention_kernel")),
    Check(ker.check_gradients_match_reference, _on("attention_kernel"), resized=ALL),
    Check(att.check_kv_cache_matches_full_forward, KERNELS, resized=ALL),
    Check(att.check_score_bias_changes_output, KERNELS, resized=ALL),
    Check(att.check_rotation_changes_output, _on("attention")),
    Check(att.check_shift_invariant, _on("attention"), resized=ALL),
    Check(att.check_learns_flagged_copy, _on("attention"), learning=True),
    Check(pos.check_position_reaches_model, _on("positional"), learning=True),
    Check(pos.check_distinct_positions, _on("positional"), resized=ALL),
    Check(pos.check_rotary_is_relative, _on("positional"), resized=ALL),
    Check(far.check_far_positions, _on("attention_kernel", "positional")),
    Check(far.check_far_token_ids, _on("embedding", "unembedding")),
    Check(parts.check_learns_bigrams, _on("embedding", "unembedding"), learning=True),
    Check(parts.check_tied_shares_tensor, _on("unembedding")),
    Check(parts.check_normalises, _on("norm"), resized=ALL),
    Check(parts.check_norm_invariances, _on("norm"), resized=ALL),
    Check(held.check_norm_hooks_agree, _on("norm")),
    Check(parts.check_learns_nonlinear, _on("mlp"), learning=True),
    Check(held.check_mlp_hooks_agree, _on("mlp")),
    Check(parts.check_block_identity_path, _on("block"), resized=ALL),
    Check(parts.check_block_uses_both_sublayers, _on("block"), resized=ALL),
    Check(parts.check_resid_mid_between_sublayers, _on("block")),
    Check(dec.check_decoder_causal, ALL, resized=BUT_KERNELS),
    Check(inc.check_decoder_prefix_stable, ALL),
    Check(inc.check_decoder_kv_cache, ALL, resized=BUT_KERNELS),
    Check(dec.check_decoder_trains, ALL, learning=True),
    Check(dec.check_decoder_checkpoint_round_trip, ALL),
    Check(check_other_sizes, ALL),
    Check(hooks.check_hooks_fire, ALL, resized=ALL),
    Check(hooks.check_hooks_are_live, ALL),
    Check(hooks.check_activations_belong_to_the_run, ALL),
    Check(hooks.check_pattern_is_a_distribution, KERNELS, resized=ALL),
    Check(dec.check_combinations, _on("attention_kernel", "positional")),
    Check(dec.check_combinations_with_plugins, _on("attention_kernel", "positional")),
)


def checks_for(kind: str) -> list[Check]:
    """The checks that apply to ``kind``, in suite order."""
    return [c for c in CHECKS if kind in c.kinds]


def run_one(subject: Subject, check: Check, expected: str | None = None) -> CheckResult:
    """Run one check (seeded, without disturbing the caller's random state)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        outcome, message = _attempt(subject, check)
    if expected is not None:
        if outcome is Outcome.FAILED:
            outcome, message = Outcome.EXPECTED_FAILURE, f"{expected} (failed: {message})"
        elif outcome is Outcome.PASSED:
            outcome = Outcome.UNEXPECTED_PASS
            message = f"declared as an expected failure ({expected}) but it passed: remove it"
    return CheckResult(subject.id, check.name, outcome, message)


def _attempt(subject: Subject, check: Check) -> tuple[Outcome, str]:
    try:
        if check.learning and subject.is_variant:
            raise NotApplicable("learning checks run once, with the default options")
        note = check.function(subject)
    except NotApplicable as reason:
        return Outcome.NOT_APPLICABLE, f"not applicable: {reason}"
    except CheckFailed as failure:
        return Outcome.FAILED, str(failure)
    except Exception as exc:  # a crash inside the implementation is a failure, not an error
        return Outcome.FAILED, _in_words(exc)
    return Outcome.PASSED, note or ""


# Autograd's own words for "no gradient can flow", and the property they mean.
_AUTOGRAD = {
    "does not require grad and does not have a grad_fn": "its output has no gradient at all",
    "appears to not have been used in the graph": "an input gets no gradient from the output",
}


def _in_words(exc: Exception) -> str:
    """A crash as a learner can act on it; autograd's errors put as the property broken."""
    for raw, meaning in _AUTOGRAD.items():
        if raw in str(exc):
            return (
                f"{meaning}: is something computed under torch.no_grad(), detached, or "
                f"replaced by a new tensor? (autograd said: {exc})"
            )
    return f"raised {type(exc).__name__}: {exc}"


def run(subjects: Iterable[Subject], expected_failures: ExpectedFailures | None = None) -> Report:
    """Every applicable check on every subject."""
    expected_failures = expected_failures or {}
    report = Report(order=[c.name for c in CHECKS])
    for subject in subjects:
        expected = expected_failures.get(subject.id, {})
        for check in checks_for(subject.kind):
            report.results.append(run_one(subject, check, expected.get(check.name)))
    return report


# Sliding windows of one key, a few keys, and more keys than any sequence the checks use.
WINDOWS = (1, 3, 1000)


def option_sets(entry: Entry, options: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The option sets to check ``entry`` with.

    ``options`` if given, else the factory's defaults plus the entry's ``check_options``; a
    kernel declaring ``sliding_window`` is also checked with each of :data:`WINDOWS` (on top of
    its last option set), unless a window is given.
    """
    sets = [dict(options)] if options is not None else [{}, *map(dict, entry.check_options)]
    if "sliding_window" in entry.capabilities and not any("window" in o for o in sets):
        sets += [{**sets[-1], "window": window} for window in WINDOWS]
    return sets


def select(
    registry: Registry | None = None,
    names: Iterable[str] = (),
    kind: str | None = None,
    distribution: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> list[Subject]:
    """Subjects from a registry: by ``kind/name`` or bare name, kind, or providing distribution.

    Each implementation comes once per option set it is checked with (see :func:`option_sets`);
    ``options`` replaces those sets with one.
    """
    registry = registry or default_registry()
    entries = registry.entries(kind)
    if distribution is not None:
        entries = [e for e in entries if e.provider.distribution == distribution]
        if not entries:
            known = sorted({e.provider.distribution for e in registry.entries()})
            raise TfsError(unknown_name_message("plugin distribution", distribution, known))
    wanted = list(names)
    if wanted:
        ids, names = {e.id for e in entries}, {e.name for e in entries}
        for name in wanted:
            if name not in ids | names:
                hint = did_you_mean(name, sorted(ids | names)) or ";"
                raise TfsError(
                    f"unknown implementation {name!r}{hint} registered: {', '.join(sorted(ids))}"
                )
        entries = [e for e in entries if e.id in wanted or e.name in wanted]
    return [Subject(e, registry, o) for e in entries for o in option_sets(e, options)]


def check(
    factory: Factory,
    *,
    kind: str,
    name: str | None = None,
    capabilities: Iterable[str] = (),
    options: Mapping[str, Any] | None = None,
    check_options: Iterable[Mapping[str, Any]] = (),
    expected_failures: Mapping[str, str] | None = None,
) -> Report:
    """Check a class (or factory) directly, before packaging it as a plugin.

    ``check(MyAttention, kind="attention", capabilities=["kv_cache"])`` registers it beside the
    built-ins under ``name`` (default: the class name in snake case) and runs every check that
    applies to ``kind``, with ``options`` (default: the factory's defaults, then each of
    ``check_options``, then sliding windows if declared). Print the returned report;
    ``report.ok`` is True when nothing failed.
    """
    name = name or _snake(getattr(factory, "__name__", "candidate"))
    registry = load_registry(autoload=False)
    mine = Registry(Provider("check", "<your code>", ""))
    mine.register(kind, name, factory, capabilities=capabilities, check_options=check_options)
    registry.merge(mine)
    entry = registry.get(kind, name)
    subjects = [Subject(entry, registry, o) for o in option_sets(entry, options)]
    expected = dict(expected_failures or {})
    return run(subjects, {s.id: expected for s in subjects})


def _snake(text: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", text).lower()


def pytest_params(
    registry: Registry | None = None,
    *,
    names: Iterable[str] = (),
    kind: str | None = None,
    distribution: str | None = None,
    expected_failures: ExpectedFailures | None = None,
) -> list[Any]:
    """``pytest.param(subject, check, expected)`` for each applicable pair, id ``kind/name/check``.

    Use with :func:`assert_conforms`; see the README for the few lines a plugin's tests need.
    """
    import pytest

    expected_failures = expected_failures or {}
    params = []
    for subject in select(registry, names, kind, distribution):
        for chk in checks_for(subject.kind):
            reason = expected_failures.get(subject.id, {}).get(chk.name)
            params.append(pytest.param(subject, chk, reason, id=f"{subject.id}/{chk.name}"))
    return params


def assert_conforms(subject: Subject, check: Check, expected: str | None = None) -> None:
    """Run one check in a pytest test: fail, skip (not applicable) or xfail, with its message."""
    import pytest

    result = run_one(subject, check, expected)
    if result.outcome is Outcome.NOT_APPLICABLE:
        pytest.skip(result.message)
    if result.outcome is Outcome.EXPECTED_FAILURE:
        pytest.xfail(result.message)
    if result.failed:
        pytest.fail(f"{result.subject} {result.check}: {result.message}", pytrace=False)
