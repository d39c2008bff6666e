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
