"""Consolidation of working-memory overflow into one episodic ``context`` episode."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from backend.memory._news import headline_topics
from backend.memory.models import Episode, MarketSnapshot
from backend.storage.models import stable_id

__all__ = ["consolidate", "context_importance"]

_CHATTER = frozenset({"exchange", "regulation", "rally"})
"""Frequent topics that make a headline less notable than, say, ``insolvency``."""


def context_importance(
    *, period_return: float, max_drawdown: float, mean_vol: float, news_tags: int
) -> float:
    """How unusual a period was, 0..1 (fractions in, annualised vol in)::

        0.1 + 0.3 * min(1, |return| / 10%) + 0.3 * min(1, |max drawdown| / 10%)
            + 0.2 * min(1, max(0, mean vol - 50%) / 100%) + 0.1 * min(1, news tags / 10)

    A quiet day scores ~0.1-0.2; a crash day with a news storm ~0.9-1.0.
    """
    value = (
        0.1
        + 0.3 * min(1.0, abs(period_return) / 0.10)
        + 0.3 * min(1.0, abs(max_drawdown) / 0.10)
        + 0.2 * min(1.0, max(0.0, mean_vol - 0.5) / 1.0)
        + 0.1 * min(1.0, news_tags / 10.0)
    )
    return round(min(1.0, max(0.0, value)), 6)


def consolidate(snapshots: Sequence[MarketSnapshot]) -> Episode:
    """Summarise consecutive snapshots of one (trader, symbol), oldest first, into one
    ``context`` episode (occurred at the last snapshot's ``as_of``).

    ``state``: ``period_return`` (last close / first close - 1), ``max_drawdown`` (worst
    close under the running max close within the period, <= 0), ``deepest_drawdown``
    (worst snapshot drawdown from its rolling high), ``mean_vol`` / ``max_vol``
    (annualised), ``bars``, ``fear_greed_first`` / ``fear_greed_last`` when known.
    Raises ``ValueError`` for an empty or mixed sequence.
    """
    if not snapshots:
        raise ValueError("nothing to consolidate")
    first, last = snapshots[0], snapshots[-1]
    if any((s.trader_id, s.symbol) != (first.trader_id, first.symbol) for s in snapshots):
        raise ValueError("snapshots of several traders or symbols cannot be consolidated")
    closes = [s.close for s in snapshots]
    peak, mdd = closes[0], 0.0
    for c in closes:
        peak = max(peak, c)
        mdd = min(mdd, c / peak - 1.0)
    period_return = last.close / first.close - 1.0
    vols = [s.realized_vol for s in snapshots]
    mean_vol = sum(vols) / len(vols)
    regimes = Counter(s.regime for s in snapshots)
    topics = Counter(t for s in snapshots for t in s.topics)
    titles: list[str] = []
    for s in reversed(snapshots):
        for title in s.headlines:
            if title not in titles:
                titles.append(title)
    tags = {t: headline_topics(t) for t in titles}
    weight = {t: sum(1 if g in _CHATTER else 2 for g in tags[t]) for t in titles}
    notable = sorted(titles, key=lambda t: -weight[t])[:3]  # stable: newest first on ties
    news_tags = sum(len(g) for g in tags.values())
    fgs = [s.fear_greed for s in snapshots if s.fear_greed is not None]
    state = {
        "period_return": period_return,
        "max_drawdown": mdd,
        "deepest_drawdown": min(s.drawdown for s in snapshots),
        "mean_vol": mean_vol,
        "max_vol": max(vols),
        "bars": float(len(snapshots)),
        "first_close": first.close,
        "last_close": last.close,
    }
    if fgs:
        state["fear_greed_first"], state["fear_greed_last"] = float(fgs[0]), float(fgs[-1])
    regime_text = ", ".join(f"{r.replace('_', ' ')} {n}" for r, n in regimes.most_common())
    topic_text = ", ".join(f"{t} ({n})" for t, n in topics.most_common(6))
    fg_text = f", Fear & Greed {fgs[0]} -> {fgs[-1]}" if fgs else ""
    news_text = f"; headlines: {' | '.join(notable)}" if notable else ""
    description = (
        f"{first.symbol} {first.timeframe} context {first.as_of:%Y-%m-%d %H:%M}Z to "
        f"{last.as_of:%Y-%m-%d %H:%M}Z ({len(snapshots)} bars): close {first.close:,.2f} -> "
        f"{last.close:,.2f} ({period_return:+.1%}), max drawdown {mdd:.1%}, realised vol "
        f"{mean_vol:.0%} avg (max {max(vols):.0%}), regimes {regime_text}{fg_text}; "
        f"topics: {topic_text or 'none'}{news_text}"
    )
    return Episode(
        id=stable_id(
            "context",
            first.trader_id,
            first.symbol,
            first.timeframe,
            first.as_of.isoformat(),
            last.as_of.isoformat(),
        ),
        trader_id=first.trader_id,
        symbol=first.symbol,
        event_type="context",
        occurred_at=last.as_of,
        description=description,
        state=state,
        importance=context_importance(
            period_return=period_return,
            max_drawdown=mdd,
            mean_vol=mean_vol,
            news_tags=news_tags,
        ),
        sources=[f"snapshot:{s.symbol}:{s.timeframe}:{s.as_of:%Y-%m-%dT%H:%M}Z" for s in snapshots],
    )
