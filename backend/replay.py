"""Trade-history replay: a real trader's fills in time order, the persona evolving with them.

The clock steps one UTC day at a time through the trader's fills. At the end of each day
with fills, the day's fills go into :meth:`PersonaManager.update_from_fills` (as of the
day's last fill), and the trader's big wins and losses detected so far
(:func:`backend.memory.detect_trade_events`, causal quantiles) become episodic memories
as the clock passes them. The output is the persona timeline: every routed change, the
numeric attributes of each profile version, and the episodes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

from backend.compose import MemorySystem
from backend.config import DetectorSettings
from backend.data.models import Fill
from backend.errors import DataError
from backend.memory import (
    MIN_TRADE_HISTORY,
    count_closing_trades,
    detect_trade_events,
    events_to_episodes,
)
from backend.memory.models import Episode, PersonaProfile

__all__ = ["ReplayResult", "persona_series", "replay_trades", "trader_fills"]

SERIES = ("long_share", "win_rate", "trade_frequency", "holding_period")
"""Numeric persona attributes tracked per version (see backend.agents.memory)."""


@dataclass(frozen=True)
class ReplayResult:
    """``changes``: PersonaManager.timeline_frame rows; ``versions``: one row per profile
    version (``as_of``, ``version``, :data:`SERIES`, ``risk_tolerance``, ``top_asset``);
    ``episodes``: big wins/losses stored; ``profile``: the final profile;
    ``resumed_days``: days the store's persona had already passed (a run resumed, their
    versions read back from the store); ``closing_trades``: the trader's closing trades
    the big win/loss detector saw, which judges none before ``min_history`` of them."""

    trader_id: str
    days: int
    fills: int
    changes: pd.DataFrame
    versions: pd.DataFrame
    episodes: list[Episode]
    profile: PersonaProfile | None
    resumed_days: int = 0
    closing_trades: int = 0
    min_history: int = MIN_TRADE_HISTORY


def persona_series(profile: PersonaProfile) -> dict[str, object]:
    """The tracked numbers of one profile version (``None`` where not known)."""
    row: dict[str, object] = {"as_of": profile.as_of, "version": profile.version}
    for name in SERIES:
        attr = profile.attributes.get(name)
        row[name] = float(attr.value) if attr and isinstance(attr.value, int | float) else None
    risk = profile.attributes.get("risk_tolerance")
    row["risk_tolerance"] = risk.value if risk else None
    assets = profile.attributes.get("preferred_assets")
    row["top_asset"] = assets.value[0] if assets and assets.value else None
    return row


def trader_fills(
    fills: Sequence[Fill],
    *,
    trader_id: str,
    until: datetime | None = None,
    source: Path | None = None,
) -> list[Fill]:
    """``trader_id``'s fills up to ``until`` (inclusive; None: all) in time order (a stable
    sort: file order within a minute). Raises :class:`DataError` when there are none: the
    message lists the traders of ``fills``, or names ``until`` when the trader's fills all
    come after it, and ``source`` (the fills file) when given."""
    mine = [f for f in fills if f.trader_id == trader_id]
    if not mine:
        known = sorted({f.trader_id for f in fills})
        raise DataError(
            f"no fills for trader {trader_id!r} (traders: {', '.join(known)})",
            path=source,
            field="trader",
        )
    own = sorted(
        (f for f in mine if until is None or f.datetime <= until), key=lambda f: f.timestamp
    )
    if not own:
        first = min(f.datetime for f in mine)
        raise DataError(
            f"no fill of trader {trader_id!r} up to {until:%Y-%m-%d %H:%M} UTC: the first is "
            f"on {first:%Y-%m-%d %H:%M} UTC",
            path=source,
            field="until",
        )
    return own


def replay_trades(
    system: MemorySystem,
    fills: Sequence[Fill],
    *,
    trader_id: str,
    detectors: DetectorSettings,
    until: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Replay ``trader_id``'s fills (up to ``until``) day by day into ``system``.

    A store whose persona of the trader was already written up to some time (an earlier
    or interrupted replay, a shorter ``--until``) is resumed, not refused: the days up to
    that time are not written again (their versions are read back from the store), and
    their fills go in with the first day after it, where the fill ledger skips the ones
    it holds (all of them, after a replay). Episodes are written idempotently. A
    reviewer's interrupted replay had left a store that every later run refused.

    Raises :class:`DataError` if the trader has no fills (up to ``until``):
    :func:`trader_fills`.
    """
    own = trader_fills(fills, trader_id=trader_id, until=until)
    pending = sorted(
        events_to_episodes(
            detect_trade_events(own, settings=detectors, trader_id=trader_id),
            trader_id=trader_id,
        ),
        key=lambda e: e.occurred_at,
    )
    days: dict[pd.Timestamp, list[Fill]] = {}
    for fill in own:
        days.setdefault(pd.Timestamp(fill.datetime).floor("D"), []).append(fill)
    versions: list[dict[str, object]] = []
    stored: list[Episode] = []
    written = system.persona.written_until(trader_id)
    carried: list[Fill] = []  # fills of days the store had passed, for the next write
    resumed = 0
    for n, (_, day_fills) in enumerate(sorted(days.items())):
        as_of = day_fills[-1].datetime
        if written is not None and as_of <= written:
            carried.extend(day_fills)
            resumed += 1
            known = system.persona.get_profile(trader_id, as_of)
        else:
            known = system.persona.update_from_fills(trader_id, carried + day_fills, as_of=as_of)
            carried = []
        if known is not None and (not versions or versions[-1]["version"] != known.version):
            versions.append(persona_series(known))
        due = [e for e in pending if e.occurred_at <= as_of]
        if due:
            system.episodic.add(due, as_of=as_of)
            stored.extend(due)
            pending = pending[len(due) :]
        if progress is not None:
            progress(n + 1, len(days))
    if carried and written is not None:  # every day passed: what the ledger lacks, now
        system.persona.update_from_fills(trader_id, carried, as_of=written)
    end = max(own[-1].datetime, written) if written is not None else own[-1].datetime
    return ReplayResult(
        trader_id=trader_id,
        days=len(days),
        fills=len(own),
        changes=system.persona.timeline_frame(trader_id, as_of=end),
        versions=pd.DataFrame(versions),
        episodes=stored,
        profile=system.persona.get_profile(trader_id, end),
        resumed_days=resumed,
        closing_trades=count_closing_trades(own, trader_id=trader_id),
    )
