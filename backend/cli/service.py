"""``sentinel scheduler ...`` and ``sentinel paper``: the service's jobs from the command line.

``backend.cli`` registers ``scheduler_app`` (``app.add_typer``) and :func:`paper`::

    sentinel scheduler jobs [--json]       # id, name, trigger, next_run_time of every job
    sentinel scheduler run                 # the scheduler in the foreground (Ctrl-C stops)
    sentinel scheduler run-once JOB_ID [--as-of T]
    sentinel paper --pair BTC/USDT --timeframe 1h --exchange binance \\
        [--api-url URL] [--replay-from T --step-s 0.5] [--until T] [--json]

Like the rest of the CLI, these commands (and the scheduler's jobs) are the only code
that reads the clock. ``paper`` runs its step as an apscheduler job in the foreground:
at every bar close + ``paper.delay_s`` (live), or with ``--replay-from`` on a replay
clock that starts there and moves one bar every ``--step-s`` seconds (an accelerated
clock over past candles). It stops at ``--until`` (clock time), when a replay reaches
the present (its clock never passes the wall clock), or on SIGINT/SIGTERM, after the
step under way; its state persists in ``scheduler.state_path``, so the same
command resumes the run.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import sys
import threading
from datetime import UTC, datetime
from types import FrameType
from typing import Annotated, Any

import typer
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.triggers.interval import IntervalTrigger

from backend.cli._common import (
    DEPENDENCY_FAILED,
    console,
    parse_pair,
    parse_utc,
    settings,
    state,
)
from backend.errors import ConfigError, ExchangeError

__all__ = ["paper", "scheduler_app"]

_EXCHANGE_TRIES = 3
"""A paper run stops at the third exchange error in a row (one or two are tried again at
the next steps: the bar's candles are asked for again, nothing was decided)."""

scheduler_app = typer.Typer(
    help="The service scheduler: persona refresh, memory consolidation, outcomes.",
    no_args_is_help=True,
)


def _config() -> tuple[Any, str]:
    from backend.service.runtime import config_key

    return settings(), config_key(state.config_path)


def _quiet_scheduler() -> None:
    """apscheduler logs every skipped overlapping run as a warning, and every failed run
    with its traceback; the scheduler's listener reports both on ``backend.service`` in
    one line instead (``--debug``: apscheduler's own logs too)."""
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
        logging.getLogger("apscheduler.executors").setLevel(logging.CRITICAL)


def _wait_for_stop(stop: threading.Event, *, deadline: datetime | None = None) -> int | None:
    """Block until ``stop`` is set, SIGINT/SIGTERM arrives or the wall clock reaches
    ``deadline``; returns the signal that stopped it, if one did.

    The signal handler only sets a flag, read between waits of 0.2 s: a handler that set
    ``stop`` itself took the event's lock, which the main thread it interrupts may hold
    inside ``stop.wait`` (a deadlock: a CI run's ``sentinel scheduler run`` ignored
    SIGTERM for 60 s; an ``Event.set`` handler against ``wait(0)`` hangs at once)."""
    signalled: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        signalled.append(signum)  # no lock taken in a handler

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not signalled and not stop.wait(0.2):
            if deadline is not None and datetime.now(UTC) >= deadline:
                break
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    return signalled[0] if signalled else None


@scheduler_app.command("jobs")
def jobs(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """List the configured jobs: id, name, trigger, next run time (UTC)."""
    from backend.service.scheduler import list_jobs

    cfg, config = _config()
    found = list_jobs(cfg, config, now=datetime.now(UTC))
    if as_json:
        print(json.dumps([j.model_dump(mode="json") for j in found]))
        return
    for job in found:
        when = job.next_run_time.isoformat() if job.next_run_time else "paused"
        console.print(f"{job.id}  {job.trigger}  next {when}  ({job.name})")


@scheduler_app.command("run")
def run() -> None:
    """Run the scheduler in the foreground until SIGINT/SIGTERM (finishing running jobs)."""
    from backend.service.runtime import close_runtimes
    from backend.service.scheduler import start_service

    cfg, config = _config()
    _quiet_scheduler()
    scheduler = start_service(cfg, config)  # the only one on its state and job store
    console.print(f"scheduler running {len(scheduler.get_jobs())} jobs; Ctrl-C stops it")
    try:
        _wait_for_stop(threading.Event())
    finally:
        scheduler.shutdown(wait=True)
        close_runtimes()


@scheduler_app.command("run-once")
def run_once(
    job_id: Annotated[str, typer.Argument(help="A job id from `sentinel scheduler jobs`.")],
    as_of: Annotated[
        str | None, typer.Option(help="Clock time of the run (UTC); default: now.")
    ] = None,
) -> None:
    """Run one configured job now, in the foreground; prints its result as JSON.
    --as-of may be any past time, not a future one: the memory's writes move forward
    in time, so a run as of 2062 had refused every later persona write (a new hard
    constraint) until then."""
    from backend.service.jobs import FAILED_JOB_LOG, JOB_FUNCTIONS
    from backend.service.runtime import close_runtimes
    from backend.service.scheduler import job_specs

    if as_of is not None:
        when = parse_utc(as_of, name="as-of")  # a bad one names --as-of
        if when > datetime.now(UTC):
            raise ConfigError(
                f"--as-of {when.isoformat()} is in the future: a job runs as of now or earlier"
            )
        as_of = when.isoformat()
    cfg, config = _config()
    specs = {s.id: s for s in job_specs(cfg, config)}
    spec = specs.get(job_id)
    if spec is None:
        raise ConfigError(f"no job {job_id!r} (known: {', '.join(sorted(specs))})")
    func = JOB_FUNCTIONS[spec.func.rsplit(":", 1)[1]]
    args: list[str | None] = list(spec.args)
    if not logging.getLogger().isEnabledFor(logging.DEBUG):  # a failure is main()'s one line
        logging.getLogger("backend.service").addFilter(lambda r: r.msg != FAILED_JOB_LOG)
    try:
        if spec.func.endswith(":paper_step"):
            if as_of is not None:
                raise ConfigError("--as-of: a paper step uses the live clock")
            result = func(*args)
        else:
            result = func(*args, as_of)
    finally:
        close_runtimes()
    print(json.dumps(result))
    step = result.get("result")
    if isinstance(step, dict) and step.get("failure"):  # a paper step whose model or memory
        raise typer.Exit(DEPENDENCY_FAILED)  # failed: the step is saved, its run no measurement


def paper(
    pair: Annotated[str, typer.Option(help="ccxt symbol, e.g. BTC/USDT.")],
    timeframe: Annotated[str, typer.Option(help="Candle timeframe, e.g. 1h.")] = "1h",
    exchange: Annotated[str | None, typer.Option(help="ccxt exchange id.")] = None,
    api_url: Annotated[
        str | None, typer.Option(help="Point the exchange API at this base URL.")
    ] = None,
    replay_from: Annotated[
        str | None,
        typer.Option(help="Replay clock start (UTC): one bar per --step-s over past candles."),
    ] = None,
    step_s: Annotated[float, typer.Option(min=0.001, help="Seconds between replay steps.")] = 1.0,
    until: Annotated[str | None, typer.Option(help="Stop once the clock reaches this.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final state as JSON.")] = False,
) -> None:
    """Paper-trade PAIR with the DeepTraderManager on closed candles from ccxt.

    The backtest's decisions and fills (next open, fees, slippage), on a schedule.
    An exchange error is tried again at the next step, with a warning; the third in a
    row ends the run. Exits 3 when it stops if its LLM or memory failed too often (the
    warning says so). Ctrl-C (SIGINT) stops it after the step under way, prints the
    summary and exits 130; SIGTERM (a service manager's stop) exits 0."""
    from backend.data import check_market
    from backend.service.paper import (
        paper_failure,
        paper_run_id,
        paper_step_seconds,
        paper_warning,
    )
    from backend.service.runtime import close_runtimes, runtime_for
    from backend.service.scheduler import add_paper_jobs, build_scheduler, paper_trigger

    cfg, config = _config()
    _quiet_scheduler()
    pair = parse_pair(pair)
    ex = exchange or cfg.exchange.id
    stop_at = parse_utc(until, name="until") if until else None
    start = parse_utc(replay_from, name="replay-from").isoformat() if replay_from else None
    if stop_at is not None and start is not None and stop_at < datetime.fromisoformat(start):
        raise ConfigError(f"--until {until} is before --replay-from {replay_from}")
    now = datetime.now(UTC)
    if stop_at is not None and start is None and stop_at <= now:
        raise ConfigError(f"--until {until} has passed: the live clock would step nothing")
    if start is not None and datetime.fromisoformat(start) > now:
        raise ConfigError(f"--replay-from {replay_from} is in the future: nothing to replay")
    # every option is checked before the scheduler runs a step: a bad one wrote an empty
    # store and state file (the pair: one request for the exchange's markets, which ccxt
    # keeps for the run's steps)
    paper_step_seconds(timeframe)
    check_market(runtime_for(config).exchange(ex, api_url=api_url), pair, timeframe=timeframe)
    if not logging.getLogger().isEnabledFor(logging.DEBUG):  # a failed step is raised below
        logging.getLogger("apscheduler.executors").setLevel(logging.CRITICAL)
        logging.getLogger("backend.service").setLevel(logging.CRITICAL)
    trigger = (
        IntervalTrigger(seconds=step_s, timezone=UTC)
        if start is not None
        else paper_trigger(timeframe, cfg.paper.delay_s)
    )
    scheduler = build_scheduler(cfg, threads=1, persistent=False)
    stop = threading.Event()
    failure: list[BaseException] = []

    caught_up: list[str] = []
    said: list[str] = []
    failed_in_a_row: list[BaseException] = []

    def on_event(event: JobExecutionEvent) -> None:
        step = (event.retval or {}).get("result") or {}
        warning = step.get("warning") if isinstance(step, dict) else None
        kind = re.sub(r"\d+", "#", warning) if warning else None  # "the last 3 steps ..."
        if warning and (not said or said[-1] != kind):
            # said while it runs, once per change (the service logger is quiet here, and
            # a live run had said nothing of a dead feed until it was stopped)
            said.append(kind or "")
            print(f"WARNING: {warning}", file=sys.stderr, flush=True)
        if event.exception is not None:
            failed_in_a_row.append(event.exception)
            if (
                isinstance(event.exception, ExchangeError)
                and len(failed_in_a_row) < _EXCHANGE_TRIES
            ):
                # a transient exchange error: the next step asks for the same candles
                # again (one HTTP 500 had ended a replay whose retry then went through)
                print(f"WARNING: step failed, tried again at the next step: {event.exception}",
                      file=sys.stderr, flush=True)  # fmt: skip
                return
            failure.append(event.exception)
            stop.set()
            return
        failed_in_a_row.clear()
        if event.retval is not None and event.retval.get("caught_up"):
            caught_up.append(event.retval["as_of"])  # a replay reached the present: done
            stop.set()
        elif (
            stop_at is not None
            and event.retval is not None
            and datetime.fromisoformat(event.retval["as_of"]) >= stop_at
        ):
            stop.set()

    scheduler.add_listener(on_event, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    add_paper_jobs(
        scheduler, trigger, job_id=f"paper:{ex}:{pair}:{timeframe}",
        args=[config, ex, pair, timeframe, start, api_url],
        kwargs={"until": stop_at.isoformat() if stop_at is not None else None},
        now=datetime.now(UTC), live=start is None,
    )  # fmt: skip
    scheduler.start()
    try:  # live: the wall clock reaching --until stops it between two bar closes too
        stopped_by = _wait_for_stop(stop, deadline=stop_at if start is None else None)
    finally:
        scheduler.shutdown(wait=True)
        run_id = paper_run_id(ex, pair, timeframe, cfg.agent.trader_id)
        db = runtime_for(config).db()
        state = db.paper_state(run_id)
        marks = db.equity(run_id)["equity"] if state is not None else None
        close_runtimes()
    if caught_up:  # said on stderr: stdout stays the summary (or the JSON)
        print(f"sentinel: the replay reached the present: stopped before {caught_up[0]}",
              file=sys.stderr)  # fmt: skip
    if as_json:
        print(state.model_dump_json() if state is not None else "null")
    elif state is not None:
        start_equity = cfg.backtest.initial_equity
        marked = (  # cash alone had read +25% of a short whose marked return was +3.6%
            f"equity {marks.iloc[-1]:,.2f} ({marks.iloc[-1] / start_equity - 1:+.2%}), "
            if marks is not None and len(marks)
            else ""
        )
        console.print(
            f"paper {state.run_id}: {state.bars} bars decided, last close "
            f"{state.last_close.isoformat() if state.last_close else '-'}, {marked}cash "
            f"{state.broker.cash:,.2f}, position {state.broker.quantity:.6f}",
            markup=False,
        )
    if failure:  # after the state so far is printed: --json had printed nothing
        raise failure[0]
    warning = (
        None
        if state is None
        else paper_warning(state, min_answered_share=cfg.llm.min_answered_share)
    )
    if warning is not None:
        print(f"WARNING: {warning}", file=sys.stderr if as_json else sys.stdout)
    share = cfg.llm.min_answered_share
    if state is not None and paper_failure(state, min_answered_share=share) is not None:
        raise typer.Exit(DEPENDENCY_FAILED)  # the state is written; its run is no measurement
    if stopped_by == signal.SIGINT:  # a run cut short is not one that reached --until
        print("sentinel: note: stopped after the step under way; its state is saved (the "
              "same command resumes)", file=sys.stderr)  # fmt: skip
        raise typer.Exit(130)  # main says "sentinel: aborted", as for every Ctrl-C
