"""The inputs of a walk-forward ablation (:mod:`backend.eval.ablation`): the windows, a
real trader's fills (and the windows they do not cover), and the reference persona
that alignment is scored against."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from backend.agents.deep_trader_manager import DEFAULT_CONSTRAINTS_NOTE
from backend.backtest.engine import utc_timestamp
from backend.compose import build_memory_system
from backend.config import Settings
from backend.data import Fill
from backend.data.fills import load_hyperliquid_fills
from backend.embeddings import Embedder
from backend.errors import DataError
from backend.memory.models import PersonaProfile

__all__ = [
    "fills_span_warnings",
    "load_trader_fills",
    "reference_profile",
    "walk_forward_windows",
]


def walk_forward_windows(
    start: datetime, end: datetime, *, months: int
) -> list[tuple[datetime, datetime]]:
    """Contiguous ``[a, b)`` windows of ``months`` calendar months from ``start``; the last
    one ends at ``end``. Raises ValueError for ``months < 1``, ``start >= end`` or a naive time."""
    if months < 1:
        raise ValueError(f"window months must be >= 1, got {months}")
    lo, hi = utc_timestamp(start), utc_timestamp(end)
    if lo >= hi:
        raise ValueError(f"start {lo.isoformat()} must be before end {hi.isoformat()}")
    out: list[tuple[datetime, datetime]] = []
    a, k = lo, 1
    while a < hi:
        # k windows from start, not one more from the last end: Jan 31 + 1 month is
        # Feb 28, and Feb 28 + 1 month had been Mar 28 (a reviewer's month-end windows)
        b = min(lo + pd.DateOffset(months=k * months), hi)
        out.append((a.to_pydatetime(), b.to_pydatetime()))
        a, k = b, k + 1
    return out


def load_trader_fills(
    path: Path, trader: str, *, not_after: datetime | None = None
) -> tuple[str, list[Fill]]:
    """``(trader id, its fills in time order)`` from a Hyperliquid fills export. ``trader``
    is the account's id, or a prefix of exactly one id (case-insensitive, e.g.
    ``0x083384f8``). Raises :class:`DataError` naming ``path`` when no (or more than one)
    trader matches, and the importer's errors for a bad file (``not_after``: a fill after
    it is one, :func:`~backend.data.fills.load_hyperliquid_fills`)."""
    fills = load_hyperliquid_fills(path, not_after=not_after)
    ids = sorted({f.trader_id for f in fills})
    chosen = [t for t in ids if t == trader] or [
        t for t in ids if t.lower().startswith(trader.lower())
    ]
    if len(chosen) != 1:
        what = "no fills" if not chosen else f"{len(chosen)} traders match"
        raise DataError(f"{what} for trader {trader!r} (traders: {', '.join(ids)})", path=path)
    return chosen[0], [f for f in fills if f.trader_id == chosen[0]]


def fills_span_warnings(
    trader_id: str, fills: Sequence[Fill], windows: Sequence[tuple[datetime, datetime]]
) -> list[str]:
    """One line per walk-forward window that the trader's fills do not cover: a window
    that ends before the first fill (its persona is the seed note alone), one the first
    fill falls inside (the seed note alone until then), and one that starts after the
    last fill (the persona stays as of the last fill). ``fills``: that trader's, any
    order; ``windows``: ``(start, end)`` UTC. Pure: the CLI prints and records them."""
    if not fills:
        return [f"no fill of {trader_id}: every window's persona is the seed note alone"]
    first = min(f.datetime for f in fills)
    last = max(f.datetime for f in fills)
    out = []
    for a, b in windows:
        if first >= b:
            out.append(
                f"window {a:%Y-%m-%d}: no fill of {trader_id} before its end {b:%Y-%m-%d}, "
                "so its persona is the seed note alone (use windows inside the fills' span, "
                f"{first:%Y-%m-%d}..{last:%Y-%m-%d})"
            )
        elif first > a:
            out.append(
                f"window {a:%Y-%m-%d}: the first fill of {trader_id} is on {first:%Y-%m-%d}, "
                f"{_into(first - a)}; until then its persona is the seed note alone"
            )
        elif last < a:
            out.append(
                f"window {a:%Y-%m-%d}: starts after the last fill of {trader_id} "
                f"({last:%Y-%m-%d}); its persona is the one known then"
            )
    return out


def _into(delta: timedelta) -> str:
    days = delta.days
    return f"{days} day{'s' if days != 1 else ''} into it" if days else "on its first day"


def reference_profile(
    settings: Settings,
    *,
    trader_id: str,
    fills: Sequence[Fill],
    start: datetime,
    end: datetime,
    embedder: Embedder | None = None,
    seed_note: str | None = DEFAULT_CONSTRAINTS_NOTE,
) -> PersonaProfile | None:
    """The trader's persona as the product builds it as of ``end``: a
    :class:`~backend.agents.memory.PersonaManager` on a throwaway store
    (``store.backend=memory``, persona text by the offline rules), ``seed_note`` recorded
    as of ``start``, then the trader's fills at or before ``end`` (all of them, not only
    the window's) as of ``end``. None when there is neither a note nor a fill."""
    cfg = settings.offline()
    fence = utc_timestamp(end).to_pydatetime()
    known = [f for f in fills if f.trader_id == trader_id and f.datetime <= fence]
    with build_memory_system(cfg, embedder=embedder) as system:
        if seed_note:
            system.persona.update_from_text(
                trader_id, seed_note, as_of=utc_timestamp(start).to_pydatetime()
            )
        if known:
            system.persona.build_from_fills(trader_id, known, as_of=fence)
        return system.persona.get_profile(trader_id, fence)
