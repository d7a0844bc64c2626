from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from backend.eval.locomo_data import load_locomo
from backend.eval.locomo_memory import (
    DIALOGUE_SYMBOL,
    SESSION_KIND,
    TURN_KIND,
    LocomoMemory,
    ingest_conversation,
    persona_tenant,
)

END = datetime(2030, 1, 1, tzinfo=UTC)


def test_ingestion_writes_every_tier_with_its_dialog_ids(
    locomo_file: Path, locomo_memory: LocomoMemory
) -> None:
    (conv,) = load_locomo(locomo_file).conversations
    stats = ingest_conversation(locomo_memory, conv)
    assert (stats.turns, stats.episodes, stats.sessions) == (9, 9, 3)
    store = locomo_memory.store
    turns = store.scan("fx-1", as_of=END, filters={"kind": TURN_KIND})
    assert sorted(str(r.metadata["dia_id"]) for r in turns) == sorted(t.dia_id for t in conv.turns)
    photo = next(r for r in turns if r.metadata["dia_id"] == "D1:4")
    assert photo.text.endswith("[shares a photo of a dog on a beach]")
    assert photo.created_at == conv.sessions[1] and photo.metadata["speaker"] == "Ben"
    episodes = locomo_memory.episodic.scan("fx-1", as_of=END, symbol=DIALOGUE_SYMBOL)
    by_centre = {e.sources[0]: e for e in episodes}
    # a window of up to 2 turns either side, within the session, centre first
    assert by_centre["D1:1"].sources == ["D1:1", "D1:2", "D1:3"]
    assert by_centre["D2:2"].sources == ["D2:2", "D2:1", "D2:3"]
    assert "Lisbon" in by_centre["D2:1"].description and "violin" in by_centre["D2:1"].description
    (s2,) = [
        r
        for r in store.scan("fx-1", as_of=END, filters={"kind": SESSION_KIND})
        if r.metadata["session"] == 2
    ]
    assert s2.metadata["dia_ids"] == "D2:1,D2:2,D2:3"
    # the session's vector is the normalised mean of its turns' vectors
    (s2_vec,) = store.get("fx-1", [s2.id], as_of=END, include_embeddings=True)
    turn_vecs = store.get(
        "fx-1", ["turn:D2:1", "turn:D2:2", "turn:D2:3"], as_of=END, include_embeddings=True
    )
    mean = np.mean([r.embedding for r in turn_vecs], axis=0)
    assert np.allclose(s2_vec.embedding, mean / np.linalg.norm(mean), atol=1e-5)


def test_persona_facts_carry_the_turn_they_came_from(
    locomo_file: Path, locomo_memory: LocomoMemory
) -> None:
    (conv,) = load_locomo(locomo_file).conversations
    ingest_conversation(locomo_memory, conv)
    ana = locomo_memory.persona.get_profile(persona_tenant("fx-1", "Ana"), END)
    assert ana is not None
    goals = ana.attributes["goals"]
    assert any("bakery" in g for g in goals.value)
    assert "D1:3" in goals.evidence
    # nothing is known before the session it was said in
    before = locomo_memory.persona.get_profile(
        persona_tenant("fx-1", "Ana"), datetime(2023, 5, 1, tzinfo=UTC)
    )
    assert before is None


def test_persona_tenant_is_a_valid_trader_id() -> None:
    assert persona_tenant("conv-26", "Caroline") == "conv-26.caroline"
    assert persona_tenant("c", "Dr. José  Smith") == "c.dr-jos-smith"
