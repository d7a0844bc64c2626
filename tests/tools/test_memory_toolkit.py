"""``MemoryToolkit.recall`` when its store fails: an error, never an empty answer."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backend.compose import build_memory_system
from backend.config import load_settings
from backend.embeddings import HashingEmbedder
from backend.errors import StoreError
from backend.memory.models import ChatMessage

TRADER = "0x513b8629fe877bb581bf244e326a047b249c4ff1"
AT = datetime(2025, 3, 1, 12, tzinfo=UTC)


def test_a_recall_whose_every_tier_failed_is_an_error_not_no_memories(tmp_path: Path) -> None:
    """The store's folder removed under a running ``sentinel mcp``: every tier failed
    with a StoreError, and recall answered ``hits: []`` with the failures in ``errors``,
    which an MCP client took as a successful call that found nothing."""
    run = tmp_path / "run"
    system = build_memory_system(load_settings().with_store_dir(run), embedder=HashingEmbedder())
    try:
        kit = system.toolkit
        kit.record_note(TRADER, "No memecoins, ever.", as_of=AT)
        kit.record_messages(
            TRADER,
            [ChatMessage(id="m1", speaker="trader", session="s1", time=AT, text="SOL is weak")],
            as_of=AT,
        )
        found = kit.recall(TRADER, "SOL", symbol="SOL/USDT", as_of=AT)
        assert not found["errors"] and found["persona"] is not None
        assert "message:m1" in {hit["id"] for hit in found["hits"]}

        shutil.rmtree(run)
        with pytest.raises(StoreError, match="recall found nothing and failed") as failed:
            kit.recall(TRADER, "SOL", symbol="SOL/USDT", as_of=AT)
        for source in ("persona", "working", "episodic", "conversation"):
            assert f"{source}: StoreError" in str(failed.value), source
        with pytest.raises(StoreError, match=r"recall found nothing and failed \(episodic: "):
            kit.recall(TRADER, "SOL", symbol=None, as_of=AT, tiers=("episodic",))
        # the decision context too: a reviewer's MCP client got a bare header, no error
        with pytest.raises(StoreError, match="build_decision_context found nothing and failed"):
            kit.build_decision_context(TRADER, "SOL/USDT", as_of=AT)
    finally:
        system.close()


def test_a_call_takes_as_of_in_utc_and_refuses_a_naive_one(tmp_path: Path) -> None:
    """A reviewer's: the same instant written "+02:00" and "Z" made two decisions, and a
    naive ``as_of`` was a bare ValueError through ``dispatch`` (not ``{"error": ...}``)."""
    from datetime import timedelta, timezone

    from backend.errors import ToolError

    system = build_memory_system(
        load_settings().with_store_dir(tmp_path / "run"), embedder=HashingEmbedder()
    )
    try:
        kit = system.toolkit
        decision = {"symbol": "BTC/USDT", "action": "buy", "size": 0.5, "rationale": "trend"}
        first = kit.call("record_decision", decision, trader_id=TRADER, as_of=AT)
        plus_two = AT.astimezone(timezone(timedelta(hours=2)))
        again = kit.call("record_decision", decision, trader_id=TRADER, as_of=plus_two)
        assert again == first  # the same instant, the same decision: a retry
        naive = AT.replace(tzinfo=None)
        with pytest.raises(ToolError, match="record_decision: as_of must be timezone-aware"):
            kit.call("record_decision", decision, trader_id=TRADER, as_of=naive)
        said = kit.dispatch("recall", {"query": "trend"}, trader_id=TRADER, as_of=naive)
        assert said == '{"error": "recall: as_of must be timezone-aware (UTC)"}'
    finally:
        system.close()


def test_an_event_or_decision_with_its_own_id_is_recorded_once(tmp_path: Path) -> None:
    """A reviewer's: over MCP a retry comes with the server's later clock, so a retried
    ``record_event`` or ``record_decision`` became a second episode (its id came from
    the time). With the caller's ``event_id`` / ``decision_id`` it is the same one, and
    another event or decision under that id is refused, never rewritten."""
    from datetime import timedelta

    from backend.errors import ToolError

    system = build_memory_system(
        load_settings().with_store_dir(tmp_path / "run"), embedder=HashingEmbedder()
    )
    try:
        kit = system.toolkit
        event = {"symbol": "SOL/USDT", "event_type": "flash_crash", "importance": 0.9,
                 "description": "SOL fell 14% in an hour", "event_id": "ev-1"}  # fmt: skip
        decision = {"symbol": "BTC/USDT", "action": "buy", "size": 0.5, "rationale": "trend",
                    "decision_id": "d-1"}  # fmt: skip
        calls = (("record_event", event), ("record_decision", decision))
        first = [kit.call(name, args, trader_id=TRADER, as_of=AT) for name, args in calls]
        outcome = {"episode_id": first[1]["episode_id"], "horizon": "1m", "market_return": 0.05}
        kit.call("record_outcome", outcome, trader_id=TRADER, as_of=AT + timedelta(minutes=1))
        later = AT + timedelta(minutes=2)  # a retry after an outcome moved the importance
        again = [kit.call(name, args, trader_id=TRADER, as_of=later) for name, args in calls]
        assert again == first
        episodes = system.episodic.scan(TRADER, as_of=later)
        assert sorted(e.event_type for e in episodes) == ["decision", "flash_crash"]
        assert {e.occurred_at for e in episodes} == {AT}  # the first time, kept
        with pytest.raises(ToolError, match="event_id 'ev-1' is already recorded as another"):
            kit.call("record_event", {**event, "description": "x"}, trader_id=TRADER, as_of=later)
        with pytest.raises(ToolError, match="decision_id 'd-1' is already recorded as another"):
            kit.call("record_decision", {**decision, "size": 1.0}, trader_id=TRADER, as_of=later)
        without = {k: v for k, v in decision.items() if k != "decision_id"}
        kit.call("record_decision", without, trader_id=TRADER, as_of=later)  # no id: by time
        assert len(system.episodic.scan(TRADER, as_of=later)) == 3
    finally:
        system.close()


def test_the_python_methods_key_one_instant_as_one_whatever_its_offset(tmp_path: Path) -> None:
    """A reviewer's: ``record_decision`` / ``record_event`` called from Python (not
    through ``call``) hashed ``as_of.isoformat()`` as given, so ``Z`` and ``+01:00`` of
    one instant stored a buy and a sell of BTC/USDT at the same time."""
    from datetime import timedelta, timezone

    from backend.errors import ToolError

    system = build_memory_system(
        load_settings().with_store_dir(tmp_path / "run"), embedder=HashingEmbedder()
    )
    try:
        kit = system.toolkit
        plus_one = AT.astimezone(timezone(timedelta(hours=1)))
        kit.record_decision(TRADER, symbol="BTC/USDT", action="buy", size=0.5, rationale="r",
                            memory_ids=[], as_of=AT)  # fmt: skip
        with pytest.raises(ToolError, match="one decision per symbol and time"):
            kit.record_decision(TRADER, symbol="BTC/USDT", action="sell", size=0.5,
                                rationale="r", memory_ids=[], as_of=plus_one)  # fmt: skip
        first, again = (
            kit.record_event(
                TRADER,
                symbol="BTC/USDT",
                event_type="news_shock",
                description="hack",
                importance=0.8,
                as_of=when,
            )
            for when in (AT, plus_one)
        )
        assert again == first
        assert len(system.episodic.scan(TRADER, as_of=AT)) == 2
    finally:
        system.close()


def test_a_second_outcome_over_one_horizon_is_refused_not_answered_as_stored(
    tmp_path: Path,
) -> None:
    """A reviewer's: a second ``record_outcome`` of an episode over one horizon with other
    values answered with the caller's values while the first one stayed stored; and a
    horizon past the calendar ("999999y") ended the MCP call as an internal error."""
    from datetime import timedelta

    from backend.errors import ToolError

    system = build_memory_system(
        load_settings().with_store_dir(tmp_path / "run"), embedder=HashingEmbedder()
    )
    try:
        kit = system.toolkit
        event = {"symbol": "BTC/USDT", "event_type": "news_shock", "description": "exchange hack",
                 "importance": 0.8}  # fmt: skip
        episode = kit.call("record_event", event, trader_id=TRADER, as_of=AT)["episode_id"]
        outcome = {"episode_id": episode, "horizon": "1h", "market_return": -0.3, "pnl": -900.0}
        hour = AT + timedelta(hours=1)
        first = kit.call("record_outcome", outcome, trader_id=TRADER, as_of=hour)
        retry = kit.call("record_outcome", outcome, trader_id=TRADER, as_of=hour + timedelta(1))
        assert retry == first  # the same outcome again: answered as stored, first time kept
        other = {**outcome, "market_return": 0.5, "pnl": 4000.0}
        with pytest.raises(ToolError, match=r"already has a 1h outcome \(market_return -0.3"):
            kit.call("record_outcome", other, trader_id=TRADER, as_of=hour + timedelta(2))
        stored = system.episodic.get(TRADER, [episode], as_of=hour + timedelta(3))[0].outcome
        assert stored is not None and stored.market_return == -0.3
        never = {**outcome, "horizon": "999999y"}
        said = kit.dispatch("record_outcome", never, trader_id=TRADER, as_of=hour)
        assert "999999y outcome" in said and "is known only from 9999-12-31" in said, said
    finally:
        system.close()


def test_a_replaying_agent_writes_nothing_into_a_past_the_store_has_moved_beyond(
    tmp_path: Path,
) -> None:
    """A reviewer's: through ``dispatch`` (the OpenAI tool surface) a write at a past
    time answered with what a conflict tells of later memory (a later message's session,
    a later persona version's time); ``replay=True`` refuses it, as ``sentinel mcp
    --as-of`` does."""
    system = build_memory_system(
        load_settings().with_store_dir(tmp_path / "run"), embedder=HashingEmbedder()
    )
    try:
        kit = system.toolkit
        later = datetime(2025, 6, 1, tzinfo=UTC)
        said_later = ChatMessage(id="m9", speaker="trader", session="secret-s",
                                 text="I sell everything in June", time=later)  # fmt: skip
        kit.record_message(TRADER, said_later)
        for name, args in (("record_message", {"text": "x", "message_id": "m9"}),
                           ("record_note", {"text": "No leverage."})):  # fmt: skip
            said = kit.dispatch(name, args, trader_id=TRADER, as_of=AT, replay=True)
            assert "a replay does not write into a past" in said, said
            assert "secret-s" not in said and "2025-06" not in said
        assert kit.recall(TRADER, "sell everything", symbol=None, as_of=AT)["hits"] == []
    finally:
        system.close()
