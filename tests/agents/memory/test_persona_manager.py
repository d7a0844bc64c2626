"""PersonaManager on real Khala stores (embedded and server): versions, incremental ==
rebuild (also across manager instances), the as_of fence, text updates, recall."""

from __future__ import annotations

from datetime import timedelta

import pytest

from backend.agents.memory import PersonaManager, render_profile, timeline_to_frame
from backend.agents.memory._persona_features import compute_persona_attributes
from backend.agents.memory._persona_router import empty_profile, route_fill_attributes
from backend.agents.memory._persona_store import LEDGER_KIND
from backend.data import Fill, fills_to_frame
from backend.errors import LookAheadError
from backend.memory.models import PersonaProfile
from backend.types import END_OF_TIME
from tests.agents.conftest import ALTS_SPOT, BTC_LONG_HF, ETH_SOL_SHORT, TRADERS
from tests.conftest import StoreFactory


def pure_build(trader: str, fills: list[Fill]) -> PersonaProfile:
    """A full build without any store (what the first stored version must equal)."""
    as_of = fills[-1].datetime
    attrs = compute_persona_attributes(fills_to_frame(fills), as_of=as_of)
    return route_fill_attributes(empty_profile(trader, as_of), attrs, as_of=as_of).profile


def same_attributes(a: PersonaProfile, b: PersonaProfile) -> None:
    assert a.attributes.keys() == b.attributes.keys()
    for name, attr in a.attributes.items():
        other = b.attributes[name]
        assert attr.value == other.value, name
        assert (attr.confidence, attr.evidence, attr.evidence_count, attr.detail) == (
            other.confidence,
            other.evidence,
            other.evidence_count,
            other.detail,
        ), name


@pytest.mark.parametrize("trader", TRADERS)
def test_incremental_update_equals_full_rebuild_across_instances(
    make_store: StoreFactory, by_trader: dict[str, list[Fill]], trader: str
) -> None:
    fills = by_trader[trader]
    cut = int(len(fills) * 0.7)
    head, tail = fills[:cut], fills[cut:]
    store = make_store()
    built = PersonaManager(store).build_from_fills(trader, head, as_of=head[-1].datetime)
    assert built.version == 1
    same_attributes(built, pure_build(trader, head))
    # a new manager instance (empty cache): the store is the source of truth
    updated = PersonaManager(store).update_from_fills(trader, tail, as_of=fills[-1].datetime)
    assert updated.version == 2
    full = pure_build(trader, fills)
    same_attributes(updated, full)
    # a rebuild on all the fills finds nothing to change: same version, no ledger copy
    chunks = len(store.scan(trader, as_of=fills[-1].datetime, filters={"kind": LEDGER_KIND}))
    again = PersonaManager(store).build_from_fills(trader, fills, as_of=fills[-1].datetime)
    assert again.version == 2
    same_attributes(again, full)
    assert len(store.scan(trader, as_of=fills[-1].datetime, filters={"kind": LEDGER_KIND})) == (
        chunks
    )
    # overlapping and duplicate fills are ignored
    overlap = fills[cut - 50 :] + fills[-3:]
    dup = PersonaManager(store).update_from_fills(trader, overlap, as_of=fills[-1].datetime)
    assert dup == updated


def test_get_profile_is_the_version_known_at_as_of(
    make_store: StoreFactory, by_trader: dict[str, list[Fill]]
) -> None:
    fills = by_trader[ALTS_SPOT]
    half = len(fills) // 2
    t1, t2 = fills[half - 1].datetime, fills[-1].datetime
    manager = PersonaManager(make_store())
    assert manager.get_profile(ALTS_SPOT, t2) is None
    v1 = manager.update_from_fills(ALTS_SPOT, fills[:half], as_of=t1)
    v2 = manager.update_from_fills(ALTS_SPOT, fills[half:], as_of=t2)
    assert (v1.version, v2.version) == (1, 2)
    assert manager.get_profile(ALTS_SPOT, t1 - timedelta(minutes=1)) is None
    assert manager.get_profile(ALTS_SPOT, t1) == v1
    assert manager.get_profile(ALTS_SPOT, t1 + (t2 - t1) / 2) == v1
    assert manager.get_profile(ALTS_SPOT, t2) == v2
    assert manager.get_profile(ETH_SOL_SHORT, t2) is None  # another trader: nothing


def test_writes_must_move_forward_and_ignore_future_and_foreign_fills(
    make_store: StoreFactory, by_trader: dict[str, list[Fill]]
) -> None:
    fills = by_trader[ETH_SOL_SHORT]
    mid = fills[len(fills) // 2].datetime
    manager = PersonaManager(make_store())
    foreign = by_trader[ALTS_SPOT][:20]
    profile = manager.build_from_fills(ETH_SOL_SHORT, fills + foreign, as_of=mid)
    known = [f for f in fills if f.datetime <= mid]
    assert profile.attributes["preferred_assets"].evidence_count == len(known)
    same_attributes(profile, pure_build(ETH_SOL_SHORT, known))
    with pytest.raises(LookAheadError):
        manager.update_from_fills(ETH_SOL_SHORT, fills, as_of=mid - timedelta(days=1))
    with pytest.raises(LookAheadError):
        manager.update_from_text(ETH_SOL_SHORT, "no DOGE", as_of=mid - timedelta(days=1))
    with pytest.raises(LookAheadError, match="timezone-aware"):
        manager.get_profile(ETH_SOL_SHORT, mid.replace(tzinfo=None))


def test_text_updates_are_versioned_and_survive_fill_updates(
    make_store: StoreFactory, by_trader: dict[str, list[Fill]]
) -> None:
    fills = by_trader[ALTS_SPOT]
    t0, t1, t2 = fills[99].datetime, fills[199].datetime, fills[-1].datetime
    store = make_store()
    manager = PersonaManager(store)
    manager.build_from_fills(ALTS_SPOT, fills[:100], as_of=t0)
    changes = manager.update_from_text(
        ALTS_SPOT,
        "Never more than 2% per trade. No memecoins. My goal is to double the account.",
        as_of=t1,
        note_id="note-1",
    )
    assert [(c.attribute, c.action, c.version) for c in changes] == [
        ("constraints", "ADD", 2),
        ("constraints", "ADD", 2),
        ("goals", "ADD", 2),
    ]
    assert manager.update_from_text(ALTS_SPOT, "hello there", as_of=t1) == []
    repeat = manager.update_from_text(ALTS_SPOT, "never more than 2% per trade", as_of=t1)
    assert [c.action for c in repeat] == ["IGNORE"]
    profile = manager.update_from_fills(ALTS_SPOT, fills[100:], as_of=t2)
    assert profile.version == 3
    fresh = PersonaManager(store)
    assert fresh.get_profile(ALTS_SPOT, t2) == profile
    assert {c.kind for c in profile.constraints()} == {"max_risk_per_trade", "no_memecoins"}
    assert profile.attributes["constraints"].evidence == ["note-1"]
    assert fresh.get_profile(ALTS_SPOT, t0).constraints() == []  # type: ignore[union-attr]
    # a rebuild from fills keeps what the trader said
    rebuilt = fresh.build_from_fills(ALTS_SPOT, fills[:100], as_of=t2)
    assert rebuilt.version == 4 and rebuilt.constraints() == profile.constraints()
    assert (
        rebuilt.attributes["preferred_assets"].value
        == pure_build(ALTS_SPOT, fills[:100]).attributes["preferred_assets"].value
    )

    timeline = fresh.timeline(ALTS_SPOT, as_of=t2)
    assert [c.as_of for c in timeline] == sorted(c.as_of for c in timeline)
    assert [c.version for c in timeline] == sorted(c.version for c in timeline)
    assert {c.source for c in timeline} == {"fills", "rules"}
    assert any(c.action == "IGNORE" for c in timeline)
    assert fresh.timeline(ALTS_SPOT, as_of=t0) == [c for c in timeline if c.as_of <= t0]
    frame = fresh.timeline_frame(ALTS_SPOT, as_of=t2)
    assert list(frame.columns) == [
        "as_of", "version", "attribute", "action", "source", "old_value", "new_value", "reason",
    ]  # fmt: skip
    assert len(frame) == len(timeline) and str(frame["as_of"].dtype) == "datetime64[ns, UTC]"
    assert timeline_to_frame([]).empty


def test_persona_is_recallable_and_rendered(
    make_store: StoreFactory, by_trader: dict[str, list[Fill]]
) -> None:
    fills = by_trader[BTC_LONG_HF][:3000]
    store = make_store()
    manager = PersonaManager(store)
    profile = manager.build_from_fills(BTC_LONG_HF, fills, as_of=fills[-1].datetime)
    manager.update_from_text(BTC_LONG_HF, "max 3x leverage", as_of=fills[-1].datetime)
    profile = manager.get_profile(BTC_LONG_HF, fills[-1].datetime)  # type: ignore[assignment]
    text = manager.render_profile(profile)
    assert text == render_profile(profile)
    assert 3 <= len(text.splitlines()) <= 10
    for needle in ("BTC", "long", "win rate", "USDC", "max leverage 3x", f"v{profile.version}"):
        assert needle in text
    hits = store.search(
        BTC_LONG_HF,
        "trader profile preferred assets win rate",
        as_of=fills[-1].datetime,
        method="bm25",
        filters={"kind": "persona"},
    )
    assert hits and hits[0].record.metadata["version"] in (1, 2)


def test_only_the_current_ledger_generation_stays_decoded(
    make_store: StoreFactory, by_trader: dict[str, list[Fill]]
) -> None:
    """A daily refresh that rebuilds from the whole export writes a new ledger generation
    each time; the manager's decoded ledger chunks are those of the current generation
    only (a long-running scheduler had kept every day's ledger), and dropping a trader's
    old generations leaves another trader's chunks alone."""
    store = make_store()
    manager = PersonaManager(store)

    def ledger_ids(trader: str) -> dict[int, set[str]]:
        chunks = store.scan(trader, as_of=END_OF_TIME, filters={"kind": LEDGER_KIND})
        out: dict[int, set[str]] = {}
        for record in chunks:
            out.setdefault(int(record.metadata["generation"]), set()).add(record.id)
        return out

    def decoded(trader: str) -> set[str]:
        return {key[1] for key in manager._chunks if key[0] == trader}

    other = by_trader[BTC_LONG_HF][:200]
    manager.build_from_fills(BTC_LONG_HF, other, as_of=other[-1].datetime)
    manager.update_from_fills(BTC_LONG_HF, other[-1:], as_of=other[-1].datetime)  # a read
    assert decoded(BTC_LONG_HF) == ledger_ids(BTC_LONG_HF)[1]

    fills = by_trader[ALTS_SPOT]
    for cut in (len(fills) // 4, len(fills) // 2, len(fills) * 3 // 4, len(fills)):
        manager.build_from_fills(ALTS_SPOT, fills[:cut], as_of=fills[cut - 1].datetime)
    # the next refresh reads the ledger (nothing new: it writes nothing)
    manager.update_from_fills(ALTS_SPOT, fills[-1:], as_of=fills[-1].datetime)
    generations = ledger_ids(ALTS_SPOT)
    assert sorted(generations) == [1, 2, 3, 4]
    assert decoded(ALTS_SPOT) == generations[4], "older ledger generations are still cached"
    assert decoded(BTC_LONG_HF) == ledger_ids(BTC_LONG_HF)[1]


def test_a_ledger_written_before_base_fee_is_rebuilt_from_the_same_fills(
    make_store: StoreFactory, by_trader: dict[str, list[Fill]]
) -> None:
    """A ledger stored before fees taken from the coin bought were kept reads them as 0
    (spot closes untimed). A rebuild from the very same fills must then write a new
    generation, not keep the old one as "nothing new"."""
    import json

    fills = [f for f in by_trader[ALTS_SPOT] if f.symbol.startswith("@")][:300]
    at = fills[-1].datetime
    store = make_store()
    PersonaManager(store).build_from_fills(ALTS_SPOT, fills, as_of=at)
    old = []
    for record in store.scan(ALTS_SPOT, as_of=END_OF_TIME, filters={"kind": LEDGER_KIND}):
        payload = json.loads(str(record.metadata["payload"]))
        del payload["columns"]["base_fee"]  # as an earlier version wrote it
        meta = {**record.metadata, "payload": json.dumps(payload)}
        old.append(record.model_copy(update={"metadata": meta}))
    store.upsert(ALTS_SPOT, old, as_of=at)
    stale = PersonaManager(store).get_profile(ALTS_SPOT, at)
    fresh = PersonaManager(make_store()).build_from_fills(ALTS_SPOT, fills, as_of=at)
    rebuilt = PersonaManager(store).build_from_fills(ALTS_SPOT, fills, as_of=at)
    assert stale is not None and fresh.attributes["holding_period"].value is not None
    generations = {
        int(r.metadata["generation"])
        for r in store.scan(ALTS_SPOT, as_of=END_OF_TIME, filters={"kind": LEDGER_KIND})
    }
    assert generations == {1, 2}
    for name in ("holding_period", "pnl_profile"):
        assert rebuilt.attributes[name].value == fresh.attributes[name].value, name
