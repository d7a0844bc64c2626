from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from backend.eval.locomo_context import render_locomo_context, turn_line
from backend.eval.locomo_data import load_locomo
from backend.memory.models import PersonaAttribute, PersonaProfile
from backend.text.tokens import count_tokens

T = datetime(2023, 9, 2, tzinfo=UTC)


def _profile() -> PersonaProfile:
    goal = PersonaAttribute(
        name="goals",
        value=["I want to open a bakery in my hometown one day"],
        confidence=0.9,
        evidence=["D1:3"],
        evidence_count=1,
        source="rules",
        first_seen=T,
        last_updated=T,
    )
    return PersonaProfile(trader_id="fx-1.ana", version=1, as_of=T, attributes={"goals": goal})


def test_context_lists_the_ranked_turns_with_dates(locomo_file: Path) -> None:
    (conv,) = load_locomo(locomo_file).conversations
    ctx = render_locomo_context(
        conv, ["D3:1", "D1:1", "D9:9", "D2:2"], budget=1500, max_turns=2, personas={}
    )
    assert ctx.memory_ids == ["D3:1", "D1:1"]  # max_turns counts ranked ids; D9:9 unknown
    assert "[D3:1 | 2 September 2023] Ana: I signed the lease" in ctx.text
    assert ctx.text.index("D3:1") < ctx.text.index("D1:1")
    assert "<data>" in ctx.text and ctx.tokens == count_tokens(ctx.text) <= 1500
    assert turn_line(conv.turns[3]).endswith("[shares a photo of a dog on a beach]")


def test_persona_block_and_budget(locomo_file: Path) -> None:
    (conv,) = load_locomo(locomo_file).conversations
    ranked = [t.dia_id for t in conv.turns]
    full = render_locomo_context(
        conv, ranked, budget=1500, max_turns=25, personas={"Ana": _profile()}
    )
    assert full.memory_ids[0] == "persona:Ana" and "goals: I want to open a bakery" in full.text
    assert len(full.memory_ids) == 1 + len(ranked)
    tight = render_locomo_context(
        conv, ranked, budget=120, max_turns=25, personas={"Ana": _profile()}
    )
    assert tight.tokens <= 120 and tight.dropped_ids
    assert set(tight.memory_ids) | set(tight.dropped_ids) == set(full.memory_ids)
    with pytest.raises(ValueError, match="smaller than the header"):
        render_locomo_context(conv, ranked, budget=5, max_turns=3)
