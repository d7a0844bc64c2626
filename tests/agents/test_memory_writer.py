"""The decision loop's batched writes when the store fails for a while (a chroma server
restarting during a flush): kept and written at the next flush, never quietly lost."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backend.agents._memory_writer import WRITE_ATTEMPTS, MemoryWriter
from backend.backtest.models import Decision, TradeRecord
from backend.compose import build_memory_system
from backend.config import MemorySettings, StoreSettings, load_settings
from backend.data import load_ohlcv
from backend.embeddings import HashingEmbedder
from backend.errors import StoreError
from backend.memory import compute_features
from backend.memory.models import Episode
from tests.conftest import start_chroma_server

TRADER = "0x513b8629fe877bb581bf244e326a047b249c4ff1"
SYMBOL = "BTC/USDT"
T0 = datetime(2022, 5, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.mark.server
def test_a_flush_while_the_server_is_down_is_written_when_it_is_back(
    shared_data: Path, tmp_path: Path
) -> None:
    """A reviewer's finding: a paper loop on a chroma server that was down for one flush
    lost that flush's decision episodes (and so their outcomes) for good, while its run
    went on and said nothing but a log line."""
    frame = load_ohlcv(shared_data / "market" / "binance", SYMBOL, "1h").frame
    features = compute_features(frame.loc["2022-04-01":"2022-05-12"], symbol=SYMBOL, timeframe="1h")
    proc, port = start_chroma_server(tmp_path)
    store = StoreSettings(backend="chroma", mode="server", host="127.0.0.1", port=port,
                          audit_path=tmp_path / "audit.sqlite3")  # fmt: skip
    working = MemorySettings(working_state_path=tmp_path / "working.sqlite3")  # not in ~
    settings = load_settings(store=store, memory=working)
    system = build_memory_system(settings, embedder=HashingEmbedder())
    try:
        writer = MemoryWriter(
            system, trader_id=TRADER, features=features, horizon_bars=1, flush_every=1
        )
        buy = Decision(action="buy", size=0.5, rationale="trend up")

        def decide(at: datetime) -> str:
            return writer.record_decision(
                buy, symbol=SYMBOL, as_of=at, market_state="calm", equity=10_000.0
            )

        first = decide(T0)
        writer.tick(T0 + H)  # its outcome (1 bar) is due
        assert writer.flush(T0 + H) == 1 and writer.stats["outcomes_recorded"] == 1
        assert writer.stats["flushes"] == 1  # a flush whose one batch call wrote it all

        _stop(proc)  # the server goes away
        second = decide(T0 + H)
        writer.tick(T0 + 2 * H)
        assert writer.flush(T0 + 2 * H) == 0
        errors = writer.take_errors()
        assert errors and errors[0].startswith("write episodes: StoreError"), errors
        assert [e.id for e in writer._buffer] == [second] and len(writer.outcomes.queued) == 1
        assert writer.stats["flushes"] == 1  # the failed one is not counted

        proc, _ = start_chroma_server(tmp_path, port=port)  # back, on the same data
        third = decide(T0 + 2 * H)
        writer.tick(T0 + 3 * H)
        assert writer.flush(T0 + 3 * H) == 2 and not writer._buffer and not writer.outcomes.queued
        assert writer.stats["flushes"] == 2
        assert writer.take_errors() == [] and writer.export_state().attempts == {}
        stored = system.episodic.get(TRADER, [first, second, third], as_of=T0 + 3 * H)
        assert [e.id for e in stored] == [first, second, third]
        assert {e.outcome_horizon_s for e in stored} == {3600}  # the loop's horizon, 1 bar
        assert stored[1].outcome is not None and stored[2].outcome is not None
        assert writer.stats["outcomes_recorded"] == 3
        assert "episodes_lost" not in writer.stats and "outcomes_lost" not in writer.stats

        # a store that stays down: kept for WRITE_ATTEMPTS flushes, then dropped and said;
        # counted across restarts too (a paper loop restores a new writer at every step)
        _stop(proc)
        decide(T0 + 3 * H)
        for n in range(WRITE_ATTEMPTS):
            saved = writer.export_state()
            writer = MemoryWriter(
                system, trader_id=TRADER, features=features, horizon_bars=1, flush_every=1
            )
            writer.restore_state(saved, added_until=T0 + (3 + n) * H)
            writer.flush(T0 + (4 + n) * H)
            kept = n + 1 < WRITE_ATTEMPTS
            assert len(writer._buffer) == int(kept) and len(writer.export_state().attempts) == (
                int(kept)
            )
        assert writer.stats["episodes_lost"] == 1
        assert any("dropped after 3 flushes" in e for e in writer.take_errors())
    finally:
        system.close()
        _stop(proc)


def _writer_on_memory(shared_data: Path, **kwargs: object) -> tuple[MemoryWriter, object]:
    frame = load_ohlcv(shared_data / "market" / "binance", SYMBOL, "1h").frame
    features = compute_features(frame.loc["2022-04-01":"2022-05-12"], symbol=SYMBOL, timeframe="1h")
    settings = load_settings(store=StoreSettings(backend="memory"))
    system = build_memory_system(settings, embedder=HashingEmbedder())
    return MemoryWriter(system, trader_id=TRADER, features=features, **kwargs), system  # type: ignore[arg-type]


def _row(
    decision: str, *, exit_at: datetime, qty: float, price: float, closes: bool
) -> TradeRecord:
    return TradeRecord(
        symbol=SYMBOL, side="long", entry_time=T0, exit_time=exit_at, entry_price=100.0,
        exit_price=price, quantity=qty, pnl=qty * (price - 100.0), return_pct=price / 100 - 1,
        fees=0.0, entry_decision=decision, closes_position=closes,
    )  # fmt: skip


def test_a_position_reduced_in_steps_is_one_trade_outcome(shared_data: Path) -> None:
    """A reviewer's finding: every reduction of a position was an outcome of its own, each
    with its own reflection (one decision had 23 on a month of BTC 1h, its importance
    driven to 1). A position is one outcome, when it closes, with the rows' PnL summed."""
    writer, system = _writer_on_memory(shared_data, horizon_bars=1, flush_every=1)
    buy = Decision(action="buy", size=0.5, rationale="trend up")
    opened = writer.record_decision(
        buy, symbol=SYMBOL, as_of=T0, market_state="calm", equity=10_000.0
    )
    writer.tick(T0 + H)  # the 1-bar horizon outcome, before any reduction
    writer.flush(T0 + H)
    for n, price in enumerate((110.0, 120.0, 90.0), start=2):  # two reductions, then the close
        writer.trade_closed(_row(opened, exit_at=T0 + n * H, qty=1.0, price=price, closes=n == 4))
        writer.tick(T0 + n * H)
        writer.flush(T0 + n * H)
    assert writer.stats["outcomes_recorded"] == 2  # the horizon's, then the position's
    episode = system.episodic.get(TRADER, [opened], as_of=T0 + 5 * H)[0]  # type: ignore[attr-defined]
    assert episode.outcome is not None and episode.outcome.horizon == "trade"
    assert episode.outcome.pnl == pytest.approx(10.0 + 20.0 - 10.0)
    assert episode.outcome.market_return == pytest.approx(320.0 / 300.0 - 1.0)
    assert episode.outcome.resolved_at == T0 + 4 * H
    # before the closing row, the reductions wait: nothing but the horizon's outcome
    before = system.episodic.get(TRADER, [opened], as_of=T0 + 3 * H)[0]  # type: ignore[attr-defined]
    assert before.outcome is not None and before.outcome.horizon == "1h"


OLD_EPISODE = Episode(
    id="ep-old", trader_id=TRADER, symbol=SYMBOL, event_type="flash_crash",
    occurred_at=T0 - 100 * H, description="a sharp drop", importance=0.5,
)  # fmt: skip
"""A market event 100 hours before the first bar (the warm start's)."""


def test_the_first_bar_reads_the_episodes_detected_before_it(shared_data: Path) -> None:
    """A reviewer's finding: the first flush waited ``flush_every`` bars, so the first day
    of every run decided without the warm-start episodes of the years before."""
    old = OLD_EPISODE
    writer, system = _writer_on_memory(shared_data, episodes=[old], horizon_bars=24)
    writer.start(T0)
    stored = system.episodic.get(TRADER, ["ep-old"], as_of=T0)  # type: ignore[attr-defined]
    assert [e.id for e in stored] == ["ep-old"]
    assert stored[0].outcome is not None and stored[0].outcome.horizon == "1d"


def test_a_first_step_run_again_logs_the_warm_start_outcomes_once(shared_data: Path) -> None:
    """A reviewer's finding: paper trading's first step writes the warm start; run again
    after a crash it decides a newer bar, and every warm-start outcome was logged a second
    time (stamped at the new bar), its reflection raising the importance twice. An
    event's outcome is stamped at its due time, so the second write is the same outcome."""
    old = OLD_EPISODE
    first, system = _writer_on_memory(shared_data, episodes=[old], horizon_bars=24)
    first.start(T0)
    once = system.episodic.get(TRADER, ["ep-old"], as_of=T0 + 2 * H)[0]  # type: ignore[attr-defined]
    assert once.outcome is not None and once.outcome.resolved_at == T0 - 76 * H
    again = MemoryWriter(
        system,  # type: ignore[arg-type]
        trader_id=TRADER, features=first.features, episodes=[old], horizon_bars=24,
    )  # fmt: skip
    again.start(T0 + H)
    twice = system.episodic.get(TRADER, ["ep-old"], as_of=T0 + 2 * H)[0]  # type: ignore[attr-defined]
    assert twice == once


def _context(at: datetime, text: str = "calm range, low volatility") -> Episode:
    return Episode(
        id=f"ctx-{at:%H}", trader_id=TRADER, symbol=SYMBOL, event_type="context",
        occurred_at=at, description=text, importance=0.2,
    )  # fmt: skip


def _count_upserts(system: object) -> list[list[str]]:
    """The ids of each ``KhalaStore.upsert`` call of ``system`` from now on."""
    store = system.store  # type: ignore[attr-defined]
    calls: list[list[str]] = []
    upsert = store.upsert

    def counted(trader_id: str, records: list[Any], **kwargs: Any) -> object:
        calls.append([r.id for r in records])
        return upsert(trader_id, records, **kwargs)

    store.upsert = counted
    return calls


def test_a_consolidation_on_a_flush_bar_goes_in_the_flushs_one_store_call(
    shared_data: Path,
) -> None:
    """Working memory's consolidation and the writer's flush fell on the same bar and
    were two chroma writes (~10-30 ms each whatever their size). On a flush bar the
    consolidation's episode is written in the flush's call; on another bar, alone."""
    writer, system = _writer_on_memory(shared_data, horizon_bars=24, flush_every=2)
    buy = Decision(action="buy", size=0.5, rationale="trend up")
    decided = writer.record_decision(buy, symbol=SYMBOL, as_of=T0, market_state="calm", equity=1e4)
    calls = _count_upserts(system)
    writer.tick(T0 + H)
    writer.write_landing([_context(T0 + H)], as_of=T0 + H)  # 1 bar: no flush due
    assert calls == [["ctx-01"]] and [e.id for e in writer._buffer] == [decided]
    writer.tick(T0 + 2 * H)
    writer.write_landing([_context(T0 + 2 * H)], as_of=T0 + 2 * H)  # due: one call
    assert calls[1:] == [[decided, "ctx-02"]] and not writer._buffer
    writer.flush_if_due(T0 + 2 * H)  # done already: nothing more
    assert len(calls) == 2 and writer.stats["flushes"] == 1 and writer.stats["writes"] == 1
    held = system.episodic.get(TRADER, [decided, "ctx-02"], as_of=T0 + 2 * H)  # type: ignore[attr-defined]
    assert sorted(e.id for e in held) == sorted([decided, "ctx-02"])


def test_a_consolidation_that_fails_in_the_flush_raises_and_the_flush_still_lands(
    shared_data: Path,
) -> None:
    """The consolidation must land or raise (working memory keeps its window then); its
    failure in the shared call must not cost the flush its episodes."""
    writer, system = _writer_on_memory(shared_data, horizon_bars=24, flush_every=1)
    system.episodic.add([_context(T0)], as_of=T0)  # type: ignore[attr-defined]
    buy = Decision(action="buy", size=0.5, rationale="trend up")
    decided = writer.record_decision(buy, symbol=SYMBOL, as_of=T0, market_state="calm", equity=1e4)
    writer.tick(T0 + H)
    other = _context(T0, "another description of the same id")  # refused: written once
    with pytest.raises(StoreError, match="written once"):
        writer.write_landing([other], as_of=T0 + H)
    assert not writer._buffer and writer.stats["episodes_lost"] == 0
    assert [e.id for e in system.episodic.get(TRADER, [decided], as_of=T0 + H)] == [decided]  # type: ignore[attr-defined]
    kept = system.episodic.get(TRADER, ["ctx-00"], as_of=T0 + H)[0]  # type: ignore[attr-defined]
    assert kept.description == "calm range, low volatility"
