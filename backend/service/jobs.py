"""The scheduled jobs: importable functions with plain, picklable arguments.

apscheduler stores a job as ``module:function`` + arguments in its SQLAlchemy job store,
so every job here is a module-level function (no lambdas, no bound methods) whose
arguments are strings: the config file (``config``: an absolute path, see
:func:`backend.service.runtime.config_key`), ids, and an optional ``as_of`` (ISO-8601;
default: now). These wrappers are the scheduler's side, the only place besides the CLI
that reads the clock; the work itself takes ``as_of`` as an argument
(:mod:`backend.service.persona_refresh`, :mod:`backend.service.consolidation`,
:mod:`backend.service.paper`). Each run takes its runtime's lock (one memory writer at
a time) inside the service state's lock of that job (:meth:`ServiceDB.job_lock`: one run
of a job at a time across processes, so a ``sentinel paper`` and a scheduler stepping one
run never write its fills twice), logs its result as one JSON line on the ``backend.service``
logger and appends it to the ``job_run`` table of the service state; an error is logged,
recorded and raised (apscheduler logs it too and the next run happens as scheduled).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from backend.errors import ConfigError
from backend.service.consolidation import (
    consolidate_trader,
    price_source,
    protected_ids,
    replay_clock,
    resolve_outcomes,
)
from backend.service.paper import replay_now
from backend.service.persona_refresh import refresh_persona_job
from backend.service.runtime import Runtime, runtime_for
from backend.types import parse_utc

__all__ = [
    "FAILED_JOB_LOG",
    "JOB_FUNCTIONS",
    "consolidation",
    "outcomes",
    "paper_step",
    "parse_as_of",
    "persona_refresh",
]

log = logging.getLogger("backend.service")


def parse_as_of(value: str | None) -> datetime:
    """``value`` (ISO-8601, naive = UTC) or the wall clock now (UTC)."""
    if value is None:
        return datetime.now(UTC)
    try:
        return parse_utc(value)
    except ValueError as exc:
        raise ConfigError(f"as_of: {exc}") from None


FAILED_JOB_LOG = "job %s as of %s failed: %s"
"""The log line of a failed job run (``sentinel scheduler run-once`` raises it instead)."""


def _failed(job_id: str, rt: Runtime, as_of: datetime, err: Exception) -> None:
    """Log a failed run of ``job_id`` (its error) in ``job_run`` and the log."""
    summary = json.dumps({"error": f"{type(err).__name__}: {err}"})
    log.error(FAILED_JOB_LOG, job_id, as_of.isoformat(), err)
    try:
        rt.db().log_run(job_id, as_of, ok=False, summary=summary)
    except Exception:  # a state file that cannot be written either: said, not masked
        log.exception("job %s: the failure could not be logged", job_id)


def _run(job_id: str, rt: Runtime, as_of: datetime, work: Callable[[], Any]) -> dict[str, Any]:
    try:
        # one run of a job at a time across processes; the process lock after, so this
        # process's other jobs never wait while it waits for another process
        with rt.db().job_lock(job_id), rt.lock:
            result = work()
    except Exception as err:  # any failure is a failed run in the log, not only ours
        _failed(job_id, rt, as_of, err)
        raise
    if isinstance(result, BaseModel):
        payload: Any = result.model_dump(mode="json")
    else:
        payload = [r.model_dump(mode="json") for r in result]
    out = {"job_id": job_id, "as_of": as_of.isoformat(), "result": payload}
    text = json.dumps(out, separators=(",", ":"))
    log.info("job %s", text)
    rt.db().log_run(job_id, as_of, ok=True, summary=text)
    return out


def persona_refresh(config: str, trader_id: str, as_of: str | None = None) -> dict[str, Any]:
    """Job ``persona-refresh:<trader_id>``: new fills of the trader -> persona update."""
    rt = runtime_for(config)
    moment = parse_as_of(as_of)
    jobs = [j for j in rt.settings.scheduler.persona_refresh if j.trader_id == trader_id]
    if not jobs:
        raise ConfigError(f"scheduler.persona_refresh: no trader {trader_id!r}")
    job = jobs[0]

    def work() -> BaseModel:
        exchange = rt.exchange() if job.source == "ccxt" else None
        return refresh_persona_job(
            job,
            settings=rt.settings,
            persona=rt.system().persona,
            db=rt.db(),
            as_of=moment,
            exchange=exchange,
        )

    return _run(f"persona-refresh:{trader_id}", rt, moment, work)


def consolidation(config: str, as_of: str | None = None) -> dict[str, Any]:
    """Job ``consolidation``: overflow -> episodes, importance decay, pruning (every
    trader of the store)."""
    rt = runtime_for(config)
    moment = parse_as_of(as_of)

    def work() -> list[BaseModel]:
        system = rt.system()
        made = system.working.consolidate_overflow(as_of=moment)
        states = rt.db().paper_states()
        return [
            consolidate_trader(
                system,
                trader,
                as_of=moment,
                settings=rt.settings.scheduler,
                protect=protected_ids(states, trader),
                consolidated=sum(1 for e in made if e.trader_id == trader),
                replay_clock=replay_clock(states, trader),
            )
            for trader in system.store.traders()
        ]

    return _run("consolidation", rt, moment, work)


def outcomes(config: str, as_of: str | None = None) -> dict[str, Any]:
    """Job ``outcomes``: outcomes of past decisions whose horizon has passed."""
    rt = runtime_for(config)
    moment = parse_as_of(as_of)

    def work() -> list[BaseModel]:
        system, db = rt.system(), rt.db()
        states = db.paper_states()
        market = rt.settings.data.market_dir
        prices = price_source(db, str(market) if market.is_dir() else None)
        return [
            resolve_outcomes(
                system,
                trader,
                as_of=moment,
                prices=prices,
                horizon_bars=rt.settings.agent.outcome_horizon_bars,
                skip=protected_ids(states, trader),
            )
            for trader in system.store.traders()
        ]

    return _run("outcomes", rt, moment, work)


def paper_step(
    config: str,
    exchange_id: str,
    pair: str,
    timeframe: str,
    replay_from: str | None = None,
    api_url: str | None = None,
    until: str | None = None,
) -> dict[str, Any]:
    """Job ``paper:<exchange>:<pair>:<timeframe>``: one paper-trading step. Its clock is
    the wall clock, or with ``replay_from`` (ISO-8601) the replay clock that starts there
    and moves one bar per run (:func:`backend.service.paper.replay_now`).

    With ``until`` (ISO-8601) a run whose clock is past it steps nothing and returns
    ``{"job_id", "as_of", "result": None}``: the scheduler may fire once more between
    the last step and its shutdown (a 0.05 s replay interval on a loaded machine did,
    and decided a 61st bar of a 60-bar run). A replay clock never passes the wall clock:
    a run whose next step would steps nothing and returns ``"caught_up": True`` (past
    now, the exchange's candle still forming had been decided as closed, and memory
    written as of the future)."""
    rt = runtime_for(config)
    job_id = f"paper:{exchange_id or rt.settings.exchange.id}:{pair}:{timeframe}"
    start = parse_as_of(replay_from) if replay_from is not None else None
    held = contextlib.ExitStack()
    try:  # a store or exchange failing as the trader is built (or a lock not had) is a
        # failed run in job_run, as for every job (it had reached only the log)
        trader = rt.paper(
            exchange_id or None,
            pair,
            timeframe,
            clock="replay" if replay_from is not None else "live",
            api_url=api_url,
        )
        held.enter_context(rt.db().job_lock(job_id))
    except Exception as err:
        _failed(job_id, rt, start or parse_as_of(None), err)
        raise
    with held:  # the replay clock: read from the state it steps, under the job lock
        held.enter_context(rt.lock)
        if start is not None:
            moment = replay_now(trader.state(), start=start, timeframe=timeframe)
        else:
            moment = parse_as_of(None)
        if until is not None and moment > parse_as_of(until):
            return {"job_id": job_id, "as_of": moment.isoformat(), "result": None}
        if start is not None and moment > parse_as_of(None):
            return {"job_id": job_id, "as_of": moment.isoformat(), "result": None,
                    "caught_up": True}  # fmt: skip

        def work() -> BaseModel:
            return trader.step(moment, replay_from=start)

        return _run(job_id, rt, moment, work)


JOB_FUNCTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "persona_refresh": persona_refresh,
    "consolidation": consolidation,
    "outcomes": outcomes,
    "paper_step": paper_step,
}
"""The job functions by name (what the scheduler stores is ``backend.service.jobs:<name>``)."""
