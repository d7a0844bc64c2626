"""The smoke job of the memory layer on the real shared data (``make demo``).

Until the backtest exists this is the main job: it loads the real candles, headlines and
Hyperliquid fills, writes them as memories into the Khala layer (one scope per trader,
plus a ``market-btc`` scope for the market), then searches them *as of* moments of the
2022 crash (LUNA in May, Celsius in June) and prints what it found. A second run finds
everything already stored (idempotent upserts) and only searches.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from backend.compose import build_memory_system
from backend.config import Settings
from backend.data import (
    Headline,
    fills_to_frame,
    load_fear_greed,
    load_headlines,
    load_hyperliquid_fills,
    load_ohlcv,
)
from backend.embeddings import build_embedder
from backend.memory import (
    FearGreedIndex,
    HeadlineIndex,
    compute_features,
    detect_market_events,
    detect_news_shocks,
    events_to_episodes,
)
from backend.storage import KhalaStore, MemoryRecord, SearchHit, open_store, stable_id

__all__ = ["daily_fill_notes", "market_notes", "run_demo"]

MARKET_SCOPE = "market-btc"
DEMO_TRADER = "demo-trader"
DEMO_AS_OF = datetime(2022, 5, 12, 12, tzinfo=UTC)
QUERIES: tuple[tuple[str, datetime], ...] = (
    ("stablecoin loses its dollar peg, crash", datetime(2022, 5, 13, tzinfo=UTC)),
    ("lending platform halts customer withdrawals", datetime(2022, 6, 14, tzinfo=UTC)),
    ("lending platform halts customer withdrawals", datetime(2022, 5, 1, tzinfo=UTC)),
    ("bitcoin falls hard on high volume", datetime(2022, 6, 20, tzinfo=UTC)),
)


def market_notes(daily: pd.DataFrame, *, pair: str) -> list[MemoryRecord]:
    """One ``market`` memory per daily candle: close, day return, range, volume vs its
    20-day mean, drawdown from the running high (all from candles up to that day; the
    note is created at the candle's close, so it is never visible before it)."""
    close = daily["close"]
    ret = close.pct_change()
    rng = (daily["high"] - daily["low"]) / daily["open"]
    vol_ratio = daily["volume"] / daily["volume"].rolling(20, min_periods=5).mean()
    drawdown = close / close.cummax() - 1.0
    out = []
    for ts in daily.index[1:]:
        closed_at = ts + pd.Timedelta(days=1)
        text = (
            f"{pair} daily candle {ts:%Y-%m-%d}: close {close[ts]:,.0f}, "
            f"day return {ret[ts]:+.1%}, range {rng[ts]:.1%}, "
            f"volume {vol_ratio[ts]:.1f}x its 20-day mean, drawdown {drawdown[ts]:.0%} from high"
        )
        out.append(
            MemoryRecord(
                id=stable_id("market", pair, ts.isoformat()),
                trader_id=MARKET_SCOPE,
                text=text,
                created_at=closed_at.to_pydatetime(),
                kind="market",
                importance=min(1.0, abs(float(ret[ts])) * 10),
                metadata={"pair": pair, "day_return": round(float(ret[ts]), 6)},
            )
        )
    return out


def daily_fill_notes(fills: pd.DataFrame) -> list[MemoryRecord]:
    """One ``trade`` memory per trader, day and symbol: fills, notional (USDC), direction
    mix and realised PnL (in words: "realised loss of 1,234 USDC"), created at the day's
    last fill."""
    out = []
    frame = fills.assign(day=fills["datetime"].dt.floor("D"))
    for (trader, day, symbol), g in frame.groupby(["trader_id", "day", "symbol"], sort=True):
        notional = float(g["cost"].sum())
        pnl = float(g["realized_pnl"].fillna(0.0).sum())
        dirs = ", ".join(
            f"{n} {str(d).replace('_', ' ')}" for d, n in g["direction"].value_counts().items()
        )
        if round(pnl) == 0:
            outcome = "no realised PnL"
        else:  # in words: a text search finds "loss", not the sign of a number
            outcome = f"realised {'loss' if pnl < 0 else 'gain'} of {abs(pnl):,.0f} USDC"
        text = (
            f"{day:%Y-%m-%d} {symbol}: {len(g)} fills ({dirs}), notional {notional:,.0f} USDC, "
            f"{outcome}"
        )
        out.append(
            MemoryRecord(
                id=stable_id("fills", trader, str(day), symbol),
                trader_id=str(trader),
                text=text,
                created_at=g["datetime"].max().to_pydatetime(),
                kind="trade",
                importance=min(1.0, abs(pnl) / 10_000),
                metadata={"symbol": str(symbol), "realized_pnl": round(pnl, 2)},
            )
        )
    return out


def _ingest(store: KhalaStore, scope: str, records: Sequence[MemoryRecord]) -> tuple[int, float]:
    started = time.perf_counter()
    added = 0
    for start in range(0, len(records), 2000):
        batch = records[start : start + 2000]
        added += store.upsert(scope, batch, as_of=max(r.created_at for r in batch)).added
    return added, time.perf_counter() - started


def _show(console: Console, title: str, hits: Iterable[SearchHit]) -> None:
    table = Table(title=title, title_justify="left")
    for col in ("#", "sim", "created (UTC)", "kind", "memory"):
        table.add_column(col)
    for hit in hits:
        table.add_row(
            str(hit.rank),
            f"{hit.similarity:.2f}",
            f"{hit.record.created_at:%Y-%m-%d %H:%M}",
            hit.record.kind,
            hit.record.text[:90],
        )
    console.print(table)


def run_demo(settings: Settings, *, data_dir: Path, console: Console) -> None:
    """Load, ingest and search the real data; print a report to ``console``.

    Raises :class:`backend.errors.DataError` for unreadable data files and
    :class:`backend.errors.StoreError` / ``EmbeddingModelError`` for store or model faults.
    """
    paths = settings.data.model_copy(update={"data_dir": data_dir})  # file names from config
    hourly = load_ohlcv(paths.market_dir, "BTC/USDT", "1h")
    daily = load_ohlcv(paths.market_dir, "BTC/USDT", "1d").frame.loc["2021-09-01":"2022-07-31"]
    headlines = load_headlines(paths.headlines_path)
    fills = fills_to_frame(load_hyperliquid_fills(paths.fills_path))
    console.print(
        f"[bold]data[/]: BTC/USDT 1h {len(hourly.frame):,} candles "
        f"({hourly.frame.index[0]:%Y-%m-%d} .. {hourly.frame.index[-1]:%Y-%m-%d}), "
        f"{len(hourly.gaps)} gaps / {sum(g.missing for g in hourly.gaps)} missing hours "
        f"(reported, not filled); {len(headlines):,} headlines; {len(fills):,} fills of "
        f"{fills['trader_id'].nunique()} traders"
    )

    embedder = build_embedder(settings.embedding)
    store = open_store(settings.store, embedder)
    news = [
        MemoryRecord(
            id=h.id,
            trader_id=MARKET_SCOPE,
            text=h.title,
            created_at=h.published_at,
            kind="news",
            metadata={"source": h.source, "subject": h.subject},
        )
        for h in headlines
    ]
    scopes = {MARKET_SCOPE: news + market_notes(daily, pair="BTC/USDT")}
    for record in daily_fill_notes(fills):
        scopes.setdefault(record.trader_id, []).append(record)
    for scope, records in scopes.items():
        added, seconds = _ingest(store, scope, records)
        console.print(
            f"[bold]ingest[/] {scope}: {len(records):,} memories, {added:,} new, "
            f"{store.count(scope):,} stored ({seconds:.1f} s, {embedder.model_id})"
        )

    for query, as_of in QUERIES:
        started = time.perf_counter()
        hits = store.search(MARKET_SCOPE, query, as_of=as_of, top_k=5, method="hybrid")
        ms = (time.perf_counter() - started) * 1000
        _show(
            console,
            f"{MARKET_SCOPE} | {query!r} as of {as_of:%Y-%m-%d} (hybrid, {ms:.0f} ms)",
            hits,
        )
    trader_as_of = datetime(2025, 6, 1, tzinfo=UTC)
    for trader in sorted(fills["trader_id"].unique()):
        hits = store.search(
            str(trader),
            "a day with a realised loss",
            as_of=trader_as_of,
            top_k=3,
            method="hybrid",
            filters={"kind": "trade"},
        )
        _show(console, f"{str(trader)[:10]}… | 'a day with a realised loss' (hybrid)", hits)
    _hierarchical(settings, store, data_dir=data_dir, headlines=headlines, console=console)
    console.print(f"store: {settings.store.path} (audit: {settings.store.resolved_audit_path})")
    store.close()


def _hierarchical(
    settings: Settings,
    store: KhalaStore,
    *,
    data_dir: Path,
    headlines: Sequence[Headline],
    console: Console,
) -> None:
    """The three tiers at the LUNA crash: persona from the trader's words, working memory
    replayed over the last 3 days of BTC/USDT 1h bars with headlines and Fear & Greed,
    episodes detected on candles and headlines since 2021-09; then the decision context."""
    with build_memory_system(settings, store=store) as system:
        system.toolkit.record_note(
            DEMO_TRADER,
            "I never risk more than 2% per trade and never use more than 3x "
            "leverage. No memecoins. My goal is to protect capital in crashes.",
            as_of=datetime(2022, 4, 1, tzinfo=UTC),
        )
        paths = settings.data.model_copy(update={"data_dir": data_dir})
        frame = load_ohlcv(paths.market_dir, "BTC/USDT", "1h").frame
        detectors = settings.memory.detectors
        features = compute_features(
            frame.loc["2021-09-01":"2022-07-05"], symbol="BTC/USDT", timeframe="1h",
            breakout_lookback_bars=detectors.breakout_lookback_bars,
        )  # fmt: skip
        news = HeadlineIndex.build(headlines)
        fear_greed = FearGreedIndex.build(load_fear_greed(paths.fear_greed_path))
        events = detect_market_events(features, settings=detectors) + detect_news_shocks(
            features, news, settings=detectors
        )
        episodes = [
            e
            for e in events_to_episodes(
                events,
                trader_id=DEMO_TRADER,
                features=features,
                headlines=news,
                fear_greed=fear_greed,
                news_window_bars=detectors.news_window_bars,
            )
            if e.occurred_at <= DEMO_AS_OF
        ]
        system.episodic.add(episodes, as_of=DEMO_AS_OF)
        for at in features.frame.index:
            if DEMO_AS_OF - timedelta(days=3) < at <= DEMO_AS_OF:
                system.working.observe_bar(
                    DEMO_TRADER, features, at.to_pydatetime(), headlines=news, fear_greed=fear_greed
                )
        ctx, rendered = system.memory.build_context(DEMO_TRADER, "BTC/USDT", as_of=DEMO_AS_OF)
    console.print(
        f"[bold]hierarchical memory[/] {DEMO_TRADER} BTC/USDT as of {DEMO_AS_OF:%Y-%m-%d %H:%M}Z: "
        f"{len(episodes)} episodes known, persona v{ctx.persona.version if ctx.persona else 0}, "
        f"{len(ctx.working)} snapshots in working memory; retrieval "
        f"{ctx.timings_ms['total']:.0f} ms; prompt section {rendered.tokens} tokens "
        f"(budget {rendered.budget}), {len(rendered.memory_ids)} memories used"
    )
    console.print(rendered.text, markup=False, highlight=False)
