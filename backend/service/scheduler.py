"""The service scheduler: apscheduler 3 with a persistent SQLAlchemy job store.

Jobs (:func:`job_specs`, from ``scheduler`` in the config; stable ids):

- ``persona-refresh:<trader_id>``: one per ``scheduler.persona_refresh`` entry;
- ``consolidation``: working-memory overflow, importance decay, pruning;
- ``outcomes``: outcomes of past decisions whose horizon has passed;
- ``paper:<exchange>:<pair>:<timeframe>``: one per ``scheduler.paper`` entry, at every
  bar close + ``paper.delay_s``.

Every job is ``backend.service.jobs:<function>`` with plain string arguments, runs with
``coalesce=True`` (runs missed while the service was down, or while a run was still
going, collapse into ONE run), ``max_instances=1`` and ``misfire_grace_time =
scheduler.misfire_grace_s`` (a paper job: at least its timeframe, so the bar close it
missed runs at start). The job store is ``scheduler.jobstore_url`` (SQLite under
``.sentinel/`` by default). At start, :func:`sync_jobs` keeps a stored job whose
definition is unchanged (so its stored next run time survives a restart: a run missed
while down happens once, at start), replaces a changed one (same id: never a duplicate)
and removes stored jobs that are no longer configured. The jobs themselves are
idempotent (``backend.service.jobs``), so a run repeated after a crash adds nothing.

:func:`start_service` returns a running ``BackgroundScheduler`` (embed it in a service;
``sentinel scheduler run`` runs one in the foreground until SIGINT/SIGTERM);
:func:`list_jobs` reads the jobs without starting anything.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import ccxt
import filelock
from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_SCHEDULER_SHUTDOWN,
    JobEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.job import Job
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from backend.config import JobTrigger, Settings
from backend.data import grid_origin, timeframe_seconds
from backend.errors import ConfigError
from backend.service._jobstore import jobstore, jobstore_file, opening, stored_jobs
from backend.service.jobs import paper_step
from backend.service.models import JobInfo
from backend.types import EPOCH

__all__ = [
    "JOBS_MODULE",
    "JobSpec",
    "add_paper_jobs",
    "build_scheduler",
    "job_specs",
    "list_jobs",
    "make_trigger",
    "paper_trigger",
    "start_service",
    "sync_jobs",
]

log = logging.getLogger("backend.service")
JOBS_MODULE = "backend.service.jobs"


@dataclass(frozen=True)
class JobSpec:
    """One configured job: stable ``id``, readable ``name``, ``func`` as
    ``module:function``, plain ``args``, and its trigger."""

    id: str
    name: str
    func: str
    args: tuple[str | None, ...]
    trigger: BaseTrigger
    misfire_grace_s: int | None = None
    """The job's own misfire grace time (None: ``scheduler.misfire_grace_s``)."""


def make_trigger(spec: JobTrigger) -> BaseTrigger:
    """An ``IntervalTrigger`` (``interval_s``) or a ``CronTrigger`` (crontab line), UTC.
    Raises :class:`ConfigError` for a cron line apscheduler rejects."""
    if spec.cron is not None:
        try:
            return CronTrigger.from_crontab(spec.cron, timezone=UTC)
        except ValueError as err:
            raise ConfigError(f"cron {spec.cron!r}: {err}") from None
    assert spec.interval_s is not None
    return IntervalTrigger(seconds=spec.interval_s, timezone=UTC)


def paper_trigger(timeframe: str, delay_s: float) -> IntervalTrigger:
    """Every bar close of ``timeframe`` (on the candles' grid, UTC:
    :func:`backend.data.grid_origin`, weeks from a Monday) + ``delay_s``."""
    return IntervalTrigger(
        seconds=timeframe_seconds(timeframe),
        start_date=grid_origin(timeframe) + timedelta(seconds=delay_s),
        timezone=UTC,
    )


def add_paper_jobs(
    scheduler: BaseScheduler,
    trigger: BaseTrigger,
    *,
    job_id: str,
    args: list[Any],
    kwargs: dict[str, Any],
    now: datetime,
    live: bool,
) -> None:
    """Add ``sentinel paper``'s steps (:func:`backend.service.jobs.paper_step` with
    ``args``/``kwargs``) to ``scheduler``: a first step at ``now``, then one per fire of
    ``trigger``. Live, the periodic job keeps the trigger's own times (every bar close +
    ``paper.delay_s``) and the first step is a job of its own (``<job_id>:first``): an
    interval trigger counts from its last fire, so a first fire at ``now`` would move every
    later step to ``now + k x timeframe``, up to a bar late. A replay steps every
    ``--step-s`` from ``now``."""
    if live:
        scheduler.add_job(paper_step, trigger=trigger, args=args, kwargs=kwargs, id=job_id)
        scheduler.add_job(paper_step, trigger="date", run_date=now, args=args, kwargs=kwargs,
                          id=f"{job_id}:first")  # fmt: skip
    else:
        scheduler.add_job(paper_step, trigger=trigger, args=args, kwargs=kwargs, id=job_id,
                          next_run_time=now)  # fmt: skip


def job_specs(settings: Settings, config: str) -> list[JobSpec]:
    """The jobs of ``settings`` (module doc); ``config`` is the config file the jobs will
    load (:func:`backend.service.runtime.config_key`)."""
    sched = settings.scheduler
    for i, job in enumerate(sched.persona_refresh):
        fills = job.fills_path or settings.data.fills_path
        if job.source == "file" and not fills.is_file():  # said at start, not at every run
            raise ConfigError(
                f"scheduler.persona_refresh.{i}.fills_path: {fills}: file not found "
                f"(persona refresh of {job.trader_id})"
            )
    specs = [
        JobSpec(
            id=f"persona-refresh:{job.trader_id}",
            name=f"persona refresh of {job.trader_id} ({job.source})",
            func=f"{JOBS_MODULE}:persona_refresh",
            args=(config, job.trader_id),
            trigger=make_trigger(job.trigger),
        )
        for job in sched.persona_refresh
    ]
    specs.append(
        JobSpec(
            id="consolidation",
            name="memory consolidation (overflow, decay, pruning)",
            func=f"{JOBS_MODULE}:consolidation",
            args=(config,),
            trigger=make_trigger(sched.consolidation),
        )
    )
    specs.append(
        JobSpec(
            id="outcomes",
            name="outcome resolution of past decisions",
            func=f"{JOBS_MODULE}:outcomes",
            args=(config,),
            trigger=make_trigger(sched.outcomes),
        )
    )
    for paper in sched.paper:
        ex = paper.exchange or settings.exchange.id
        if ex not in ccxt.exchanges:  # said when the service starts, not at every bar
            raise ConfigError(
                f"scheduler.paper: unknown exchange id {ex!r} for {paper.pair} "
                f"{paper.timeframe} (see ccxt.exchanges)"
            )
        specs.append(
            JobSpec(
                id=f"paper:{ex}:{paper.pair}:{paper.timeframe}",
                name=f"paper trading {paper.pair} {paper.timeframe} on {ex}",
                func=f"{JOBS_MODULE}:paper_step",
                args=(config, ex, paper.pair, paper.timeframe),
                trigger=paper_trigger(paper.timeframe, settings.paper.delay_s),
                # at least a bar: the coalesced run of a bar close missed while the
                # service was down is at most one bar old, so it runs at start (a 4h
                # job missed by 3 h had waited for the next close, a 1d one a day)
                misfire_grace_s=max(sched.misfire_grace_s, timeframe_seconds(paper.timeframe)),
            )
        )
    ids = [s.id for s in specs]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"scheduler: duplicate job ids in {ids}")
    return specs


def _on_event(event: JobEvent) -> None:
    if event.code == EVENT_JOB_ERROR:
        log.error("job %s failed: %r", event.job_id, getattr(event, "exception", None))
    elif event.code == EVENT_JOB_MISSED:
        log.warning("job %s missed its run at %s", event.job_id, event.scheduled_run_time)
    elif event.code == EVENT_JOB_MAX_INSTANCES:
        log.info("job %s still running: this run is skipped", event.job_id)


def build_scheduler(
    settings: Settings, *, threads: int = 4, persistent: bool = True
) -> BackgroundScheduler:
    """A ``BackgroundScheduler`` (not started) on the persistent job store (an in-memory
    one with ``persistent=False``: ``sentinel paper``), with the job defaults of the
    module doc; job errors, missed runs and skipped overlapping runs are logged on
    ``backend.service``."""
    store = jobstore(settings.scheduler.jobstore_url) if persistent else MemoryJobStore()
    scheduler = BackgroundScheduler(
        jobstores={"default": store},
        executors={"default": ThreadPoolExecutor(max_workers=threads)},
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": settings.scheduler.misfire_grace_s,
        },
        timezone=UTC,
    )
    scheduler.add_listener(_on_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
    return scheduler


def _same(job: Job, spec: JobSpec, misfire_grace_s: float | None) -> bool:
    """Whether the stored ``job`` runs as ``spec`` says: function, arguments, name, the
    trigger (its text; and an epoch-anchored interval's start, which carries
    ``paper.delay_s`` and does not show in the text) and the misfire grace time."""
    anchored = getattr(spec.trigger, "start_date", None)
    return bool(
        job.func_ref == spec.func
        and tuple(job.args) == spec.args
        and not job.kwargs
        and job.name == spec.name
        and str(job.trigger) == str(spec.trigger)
        and (
            anchored is None
            # not anchored ("from now"): a grid origin is the epoch or, for weeks, the
            # Monday after it, plus paper.delay_s
            or anchored > EPOCH + timedelta(days=8)
            or getattr(job.trigger, "start_date", None) == anchored
        )
        and (misfire_grace_s is None or job.misfire_grace_time == misfire_grace_s)
    )


def _grace(spec: JobSpec, default: float | None) -> float | None:
    """The misfire grace time ``spec`` runs with: its own, else ``default``."""
    return spec.misfire_grace_s if spec.misfire_grace_s is not None else default


def sync_jobs(
    scheduler: BackgroundScheduler,
    specs: Sequence[JobSpec],
    *,
    misfire_grace_s: float | None = None,
) -> dict[str, str]:
    """Make the started (possibly paused) ``scheduler``'s store hold exactly ``specs``
    (module doc), a stored job whose misfire grace time is not its spec's own
    (``JobSpec.misfire_grace_s``), else ``misfire_grace_s`` (when given:
    ``scheduler.misfire_grace_s``), being replaced too. Returns ``{job id: "kept" |
    "added" | "replaced" | "removed"}``."""
    done: dict[str, str] = {}
    wanted = {s.id for s in specs}
    for job in scheduler.get_jobs():
        if job.id not in wanted:
            scheduler.remove_job(job.id)
            done[job.id] = "removed"
    for spec in specs:
        existing = scheduler.get_job(spec.id)
        grace = _grace(spec, misfire_grace_s)
        if existing is not None and _same(existing, spec, grace):
            done[spec.id] = "kept"
            continue
        scheduler.add_job(
            spec.func,
            trigger=spec.trigger,
            args=list(spec.args),
            id=spec.id,
            name=spec.name,
            replace_existing=True,
            **({} if grace is None else {"misfire_grace_time": grace}),
        )
        done[spec.id] = "replaced" if existing is not None else "added"
    log.info("scheduler jobs: %s", done)
    return done


@contextmanager
def only_scheduler(settings: Settings) -> Iterator[None]:
    """Held for the life of a ``sentinel scheduler run``: a second one on the same service
    state (``scheduler.state_path``) or the same SQLite job store
    (``scheduler.jobstore_url``) refuses to start, since each would run every job
    (apscheduler 3 does not share a job store between processes: a reviewer's two
    schedulers on one job store and two states ran every job twice, with the config of
    the one that synced the jobs last). A job store on a database server is not locked.
    Raises :class:`ConfigError` at once when another process holds either."""
    held = [(Path(f"{settings.scheduler.state_path}.scheduler.lock"), "service state")]
    if (file := jobstore_file(settings.scheduler.jobstore_url)) is not None:
        held.append((Path(f"{file}.scheduler.lock"), "job store"))
    with ExitStack() as stack:
        for path, what in held:
            lock = filelock.FileLock(path, timeout=0)
            try:
                lock.acquire()
            except filelock.Timeout:
                where = settings.scheduler.state_path if what == "service state" else file
                raise ConfigError(
                    f"another scheduler runs on {where} ({lock.lock_file} is held): "
                    f"one scheduler per {what}"
                ) from None
            stack.callback(lock.release)
        yield


def start_service(
    settings: Settings, config: str, *, extra: Sequence[JobSpec] = (), paused: bool = False
) -> BackgroundScheduler:
    """Build the scheduler, start it paused, sync the configured jobs (+ ``extra``) and
    resume it (unless ``paused``). Stop it with ``scheduler.shutdown(wait=True)`` and
    then :func:`backend.service.runtime.close_runtimes`. Holds :func:`only_scheduler`
    until it is shut down (an embedded one and ``sentinel scheduler run`` on one state
    had both run every job, a reviewer's): raises :class:`ConfigError` when another
    scheduler holds it."""
    held = ExitStack()
    held.enter_context(only_scheduler(settings))
    scheduler = build_scheduler(settings)
    scheduler.add_listener(lambda _: held.close(), EVENT_SCHEDULER_SHUTDOWN)
    try:
        with opening(settings.scheduler.jobstore_url):
            scheduler.start(paused=True)
    except BaseException:
        held.close()
        raise
    try:
        sync_jobs(
            scheduler,
            [*job_specs(settings, config), *extra],
            misfire_grace_s=settings.scheduler.misfire_grace_s,
        )
    except BaseException:
        scheduler.shutdown(wait=False)
        raise
    if not paused:
        scheduler.resume()
    return scheduler


def list_jobs(settings: Settings, config: str, *, now: datetime) -> list[JobInfo]:
    """The configured jobs with their trigger and next run time: the stored one when the
    store holds the same job (what a running scheduler will use), else the trigger's
    first fire time after ``now`` (what a scheduler started now would use)."""
    specs = job_specs(settings, config)
    stored = stored_jobs(settings.scheduler.jobstore_url)
    out = []
    for spec in specs:
        job = stored.get(spec.id)
        if job is not None and _same(job, spec, _grace(spec, settings.scheduler.misfire_grace_s)):
            next_run: Any = job.next_run_time
        else:
            next_run = spec.trigger.get_next_fire_time(None, now)
        out.append(
            JobInfo(id=spec.id, name=spec.name, trigger=str(spec.trigger), next_run_time=next_run)
        )
    return out
