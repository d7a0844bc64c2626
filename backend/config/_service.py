"""Sections of the service (``scheduler``): its job store and its scheduled jobs."""

from __future__ import annotations

import re
from datetime import UTC
from pathlib import Path
from typing import Literal

from apscheduler.triggers.cron import CronTrigger
from pydantic import Field, field_validator, model_validator

from backend.config._section import _Section
from backend.types import normalize_pair


class JobTrigger(_Section):
    """When a scheduled job runs: every ``interval_s`` seconds, or on a ``cron`` line
    (five crontab fields, ``minute hour day month day_of_week``, UTC). Exactly one."""

    interval_s: float | None = Field(default=None, gt=0, le=366 * 86_400)
    cron: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> JobTrigger:
        if (self.interval_s is None) == (self.cron is None):
            raise ValueError("give exactly one of interval_s and cron")
        if self.cron is not None and len(self.cron.split()) != 5:
            raise ValueError("cron needs 5 fields: minute hour day month day_of_week")
        if self.cron is not None:  # apscheduler's reading, here so the error names the key
            try:
                CronTrigger.from_crontab(self.cron, timezone=UTC)
            except ValueError as err:
                raise ValueError(f"cron {self.cron!r}: {err}") from None
        return self


class PersonaRefreshJob(_Section):
    """One trader whose persona is refreshed from new fills on a schedule."""

    trader_id: str = Field(min_length=1)
    source: Literal["file", "ccxt"] = "file"
    """``file``: a Hyperliquid fills export (``fills_path``); ``ccxt``: the exchange's
    ``fetch_my_trades`` with the ``exchange`` settings and credentials."""
    fills_path: Path | None = None
    """File source; default ``data.fills_path``."""
    symbols: list[str] = Field(default_factory=list)
    """ccxt source: the symbols to fetch (``[]``: one call without a symbol, where the
    exchange allows it)."""
    trigger: JobTrigger = JobTrigger(interval_s=3600)


class PaperJob(_Section):
    """A paper-trading loop run by the service scheduler (as ``sentinel paper`` does)."""

    pair: str = Field(min_length=3)
    """Any spelling of a pair (``BTCUSDT``, ``btc_usdt``), read as its ccxt symbol
    (``BTC/USDT``: :func:`backend.types.normalize_pair`), as ``sentinel paper --pair``
    does: both name the same run and its lock."""
    timeframe: str = "1h"
    exchange: str | None = None
    """ccxt id; default ``exchange.id``."""

    _pair = field_validator("pair")(normalize_pair)

    @field_validator("timeframe")
    @classmethod
    def _fixed_length(cls, value: str) -> str:
        """A candle length paper trading can step (``1s`` .. ``1w``), refused when the
        config loads, not when the job first runs."""
        if not re.fullmatch(r"[1-9]\d*[smhdw]", value):
            raise ValueError(
                f"paper trading needs a fixed-length timeframe (e.g. 1h), got {value!r}"
            )
        return value


DEMO_TRADER = "0x513b8629fe877bb581bf244e326a047b249c4ff1"
"""The trader of the default persona refresh job (and of the README's examples)."""


class SchedulerSettings(_Section):
    """apscheduler 3 jobs of the service (``sentinel scheduler run``) and their store."""

    jobstore_url: str = "sqlite:///.sentinel/scheduler.sqlite3"
    """SQLAlchemy URL of the persistent job store (a relative SQLite path in a config file
    is relative to the file's base, like ``store.path``: :mod:`backend.config._yaml`)."""
    state_path: Path = Path(".sentinel/service.sqlite3")
    """SQLite file of the jobs' own state: fill cursors, paper-trading runs."""
    misfire_grace_s: int = Field(default=3600, ge=1)
    """A run missed by at most this many seconds still runs (once: runs coalesce)."""
    persona_refresh: list[PersonaRefreshJob] = Field(
        default_factory=lambda: [PersonaRefreshJob(trader_id=DEMO_TRADER)]
    )
    """Default: the demo trader (the BTC long trader of the shared Hyperliquid export)."""
    consolidation: JobTrigger = JobTrigger(interval_s=3600)
    outcomes: JobTrigger = JobTrigger(interval_s=3600)
    paper: list[PaperJob] = Field(default_factory=list)
    decay_half_life_days: float = Field(default=180.0, gt=0)
    """Consolidation multiplies each episode's importance by ``0.5 ** (days since its
    last decay / half_life)``."""
    prune_below: float = Field(default=0.02, ge=0, le=1)
    """Consolidation deletes episodes whose importance is below this ..."""
    prune_after_days: float = Field(default=180.0, gt=0)
    """... and that occurred more than this many days ago (never one linked to an open
    paper position or still waiting for its outcome)."""
