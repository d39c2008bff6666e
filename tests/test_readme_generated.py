"""The README's generated sections (contracts, dimensions, helpers, built-ins) match the code."""

from pathlib import Path

import pytest

from transformer_from_scratch import guide
from transformer_from_scratch.core.kinds import KINDS

README = Path(__file__).parent.parent / "README.md"


def test_generated_sections_are_current() -> None:
    stale = guide.stale(README.read_text(encoding="utf-8"), guide.sections())
    assert not stale, (
        f"the README's sections {stale} differ from the code; run "
        "`python -m transformer_from_scratch.guide --write README.md`"
    )


def test_a_changed_contract_is_noticed() -> None:
    rendered = guide.sections()
    text = guide.rewrite(README.read_text(encoding="utf-8"), rendered)
    assert guide.stale(text, rendered) == []
    changed = dict(rendered, contracts=rendered["contracts"].replace("[batch", "[pos", 1))
    assert guide.stale(text, changed) == ["contracts"]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_has_a_guide_with_layouts(kind: str) -> None:
    contract = guide.render_contract(KINDS[kind])
    assert "def forward" in contract or "def embed" in contract
    assert "[batch" in contract or "[pos" in contract, f"{kind}'s guide names no layout"


def test_the_signatures_are_the_protocols() -> None:
    kernel = guide.method_source("attention_kernel", "forward")
    assert kernel == (
        "def forward(self, queries: Queries, keys: Keys, values: Values, *, "
        "query_positions: QueryPositions, key_positions: KeyPositions, "
        "score_bias: ScoreBias | None = None) -> Mixed:"
    )


def test_the_recorded_check_run_has_the_codes_checks_and_rows() -> None:
    import json

    from transformer_from_scratch import conformance
    from transformer_from_scratch.core.plugins import load_registry

    registry = load_registry(autoload=True)
    if "tfs-example-plugin" not in {e.provider.distribution for e in registry.entries()}:
        pytest.skip("the example plugin is not installed (pip install -e plugins/example-plugin)")
    subjects = [s for s in conformance.select(registry)
                if s.entry.provider.distribution in ("transformer-from-scratch", "tfs-example-plugin")]  # fmt: skip
    expected = {(s.id, c.name) for s in subjects for c in conformance.checks_for(s.kind)}
    recorded = json.loads(guide.RECORDED_CHECKS.read_text(encoding="utf-8"))["results"]
    assert {(r["implementation"], r["check"]) for r in recorded} == expected, (
        "the checks or implementations changed: record again with "
        "`tfs check --jobs 2 --json benchmarks/results/check_cpu.json`, then "
        "`python -m transformer_from_scratch.guide --write README.md`"
    )
