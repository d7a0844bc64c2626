"""Scheduled persona refresh: new fills of a trader -> :meth:`PersonaManager.update_from_fills`.

Sources (``scheduler.persona_refresh[].source``):

- ``file``: a Hyperliquid fills export (:func:`backend.data.load_hyperliquid_fills`),
  re-read at each run (the file grows as the export is refreshed);
- ``ccxt``: the exchange's ``fetch_my_trades`` (needs ``SENTINEL_EXCHANGE__API_KEY`` /
  ``__SECRET``), paged from the cursor, converted by
  :func:`backend.data.fills_from_ccxt_trades`.

The trader's fills at or before ``as_of`` are passed on (from a file: all of them, so a
fill that shows up late in a refreshed export, older than fills already ingested, is
still ingested; from ccxt: those since the cursor, the newest fill time ingested, kept in
the service state). The persona ledger ignores fill ids it already has, so a run
repeated after a crash or a restart adds nothing and stores no new version
(idempotent), and an incremental update equals a rebuild on the same fills
(PersonaManager's contract).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import ccxt

from backend.agents.memory import PersonaManager
from backend.config import PersonaRefreshJob, Settings
from backend.data import Fill, fills_from_ccxt_trades, load_hyperliquid_fills
from backend.errors import ExchangeError
from backend.service._db import ServiceDB
from backend.service.models import PersonaRefreshResult
from backend.types import to_utc

__all__ = ["fetch_ccxt_fills", "refresh_persona", "refresh_persona_job"]

log = logging.getLogger("backend.service")

_MAX_PAGES = 10_000


def _cursor_key(trader_id: str) -> str:
    return f"persona-fills:{trader_id}"


def _trade_key(trade: dict[str, Any]) -> object:
    """A trade's identity across pages: its id, else its unified fields."""
    if trade.get("id"):
        return ("id", trade.get("symbol"), str(trade["id"]))
    fields = ("symbol", "order", "timestamp", "side", "price", "amount")
    return tuple(str(trade.get(k)) for k in fields)


def fetch_ccxt_fills(
    exchange: ccxt.Exchange,
    *,
    trader_id: str,
    symbols: list[str],
    since_ms: int | None,
    until: datetime,
    limit: int = 1000,
) -> list[Fill]:
    """Page ``exchange.fetch_my_trades(symbol, since, limit)`` per symbol (one call with
    ``symbol=None`` when ``symbols`` is empty) from ``since_ms`` (epoch ms; None = from
    the epoch) until a page is short, empty, brings no new trade or passes ``until``. Each
    page starts AT the previous page's newest trade time (trades often share a
    millisecond; repeated ones are dropped by trade id), so nothing at a page boundary is
    skipped unless more than ``limit`` trades share one millisecond. Returns the fills at
    or before ``until``, time-sorted. Raises :class:`ExchangeError` for any ccxt error."""
    end_ms = int(to_utc(until).timestamp() * 1000)
    trades: list[dict[str, Any]] = []
    seen: set[object] = set()
    where = getattr(exchange, "id", "exchange")
    try:
        wanted: list[str | None] = list(symbols) or [None]
        for symbol in wanted:
            cursor = since_ms if since_ms is not None else 0
            for _ in range(_MAX_PAGES):
                page = exchange.fetch_my_trades(symbol, since=cursor, limit=limit)
                new = [t for t in page if _trade_key(t) not in seen]
                seen.update(_trade_key(t) for t in new)
                trades.extend(new)
                if not new or len(page) < limit:
                    break
                last = max(int(t["timestamp"]) for t in page)
                if last > end_ms or last < cursor:
                    break
                cursor = last
    except ccxt.BaseError as err:
        raise ExchangeError(f"{where} fetch_my_trades: {type(err).__name__}: {err}") from err
    fills = fills_from_ccxt_trades(trades, trader_id=trader_id, source=str(where))
    return [f for f in fills if f.timestamp <= end_ms]


def refresh_persona(
    persona: PersonaManager,
    trader_id: str,
    fills: list[Fill],
    *,
    as_of: datetime,
    source: str,
    cursor_ms: int | None,
) -> PersonaRefreshResult:
    """Pass the trader's ``fills`` at or before ``as_of`` to
    ``persona.update_from_fills`` (fills it already has are ignored there); returns what
    changed, counting as new the fills newer than ``cursor_ms``."""
    fence = to_utc(as_of)
    mine = [f for f in fills if f.trader_id == trader_id and f.datetime <= fence]
    before = persona.get_profile(trader_id, fence)
    after = persona.update_from_fills(trader_id, mine, as_of=fence) if mine else before
    stamps = [f.timestamp for f in mine]
    known = [] if cursor_ms is None else [cursor_ms]
    others = sorted({f.trader_id for f in fills} - {trader_id})
    warning = None
    if others and not any(f.trader_id == trader_id for f in fills):
        more = " ..." if len(others) > 3 else ""
        warning = (
            f"no fill of trader {trader_id} in {source} (ids are case-sensitive; it holds "
            f"{', '.join(others[:3])}{more})"
        )
        log.warning("persona refresh: %s", warning)
    return PersonaRefreshResult(
        trader_id=trader_id,
        as_of=fence,
        source=source,
        fills_read=len(mine),
        fills_new=sum(1 for t in stamps if cursor_ms is None or t > cursor_ms),
        version_before=before.version if before is not None else 0,
        version_after=after.version if after is not None else 0,
        cursor_ms=max(stamps + known) if stamps or known else None,
        warning=warning,
    )


def refresh_persona_job(
    job: PersonaRefreshJob,
    *,
    settings: Settings,
    persona: PersonaManager,
    db: ServiceDB,
    as_of: datetime,
    exchange: ccxt.Exchange | None = None,
) -> PersonaRefreshResult:
    """One scheduled refresh of ``job.trader_id`` from its configured source; moves the
    cursor only after the persona write succeeded."""
    key = _cursor_key(job.trader_id)
    stored = db.cursor(key)
    cursor_ms = int(stored) if stored is not None else None
    if job.source == "file":
        path = job.fills_path or settings.data.fills_path
        fills = load_hyperliquid_fills(path, allow_empty=True)  # an export with no fills yet
        source = f"file:{path}"
    else:
        if exchange is None:
            raise ExchangeError("persona refresh from ccxt needs an exchange")
        fills = fetch_ccxt_fills(
            exchange,
            trader_id=job.trader_id,
            symbols=list(job.symbols),
            since_ms=cursor_ms,
            until=as_of,
        )
        source = f"ccxt:{getattr(exchange, 'id', 'exchange')}"
    result = refresh_persona(
        persona, job.trader_id, fills, as_of=as_of, source=source, cursor_ms=cursor_ms
    )
    if result.cursor_ms is not None and result.cursor_ms != cursor_ms:
        db.set_cursor(key, str(result.cursor_ms))
    return result
