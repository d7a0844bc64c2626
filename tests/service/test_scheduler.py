"""The apscheduler service on its persistent SQLAlchemy job store: importable jobs with
plain arguments, restarts that neither duplicate nor forget jobs, missed runs that
coalesce into one, overlapping runs skipped (max_instances=1) on an accelerated clock."""

from __future__ import annotations

import itertools
import json
import pickle
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobEvent
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from apscheduler.util import ref_to_obj

from backend.config import JobTrigger, PersonaRefreshJob, load_settings
from backend.errors import ConfigError
from backend.service.runtime import config_key
from backend.service.scheduler import (
    JobSpec,
    build_scheduler,
    job_specs,
    list_jobs,
    make_trigger,
    start_service,
    sync_jobs,
)
from tests.service.conftest import ConfigFactory

DEFAULT_TRADER = "0x513b8629fe877bb581bf244e326a047b249c4ff1"


def clock_job(path: Path, *, every_s: float, work_s: float) -> JobSpec:
    return JobSpec(
        id="sim-clock",
        name="simulated clock",
        func="tests.service._jobs:advance_clock",
        args=(str(path), str(work_s)),
        trigger=IntervalTrigger(seconds=every_s, timezone=UTC),
    )


def clock_state(path: Path) -> dict[str, object]:
    return json.loads(path.read_text()) if path.is_file() else {"bar": 0, "steps": []}


def wait_for(predicate: object, *, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out waiting for the scheduler"
        time.sleep(0.05)


def test_a_fills_file_that_is_not_there_is_said_at_start(tmp_path: Path) -> None:
    """A reviewer's refresh job on a missing export started without a word, then logged
    a traceback at every run."""
    settings = load_settings()
    job = PersonaRefreshJob(trader_id="x", fills_path=tmp_path / "none.csv")
    missing = settings.model_copy(
        update={"scheduler": settings.scheduler.model_copy(update={"persona_refresh": [job]})}
    )
    with pytest.raises(ConfigError, match=r"persona_refresh\.0\.fills_path: .*none\.csv"):
        job_specs(missing, config_key(None))


def test_default_jobs_are_importable_functions_with_plain_arguments() -> None:
    config = config_key(None)
    specs = job_specs(load_settings(), config)
    assert [s.id for s in specs] == [
        f"persona-refresh:{DEFAULT_TRADER}",
        "consolidation",
        "outcomes",
    ]
    for spec in specs:
        assert callable(ref_to_obj(spec.func))
        assert spec.func.startswith("backend.service.jobs:")
        assert pickle.loads(pickle.dumps(spec.args)) == spec.args
        assert spec.args[0] == config
    assert str(make_trigger(JobTrigger(cron="5 * * * *"))).startswith("cron[")
    with pytest.raises(ValueError, match="exactly one"):
        JobTrigger(interval_s=60, cron="5 * * * *")
    with pytest.raises(ValueError, match=r"cron '5 \* \* \* 9': .*maximum value"):
        JobTrigger(cron="5 * * * 9")  # the config names the key (a reviewer's had not)


def test_a_restart_keeps_the_stored_jobs_and_syncs_config_changes(
    make_config: ConfigFactory,
) -> None:
    path = make_config("sync")
    settings, config = load_settings(path), str(path)
    first = start_service(settings, config, paused=True)
    stored = {j.id: j.next_run_time for j in first.get_jobs()}
    # a reviewer's: an embedded scheduler and `sentinel scheduler run` on one state both
    # ran every job; start_service holds the one-scheduler lock until it is shut down
    with pytest.raises(ConfigError, match="one scheduler per service state"):
        start_service(settings, config, paused=True)
    first.shutdown()
    assert len(stored) == 3

    again = build_scheduler(settings)
    again.start(paused=True)
    try:
        assert sync_jobs(again, job_specs(settings, config)) == dict.fromkeys(stored, "kept")
        assert {j.id: j.next_run_time for j in again.get_jobs()} == stored  # nothing reset
        listed = list_jobs(settings, config, now=datetime.now(UTC))
        assert {j.id: j.next_run_time for j in listed} == stored
        changed = settings.model_copy(
            update={
                "scheduler": settings.scheduler.model_copy(
                    update={"persona_refresh": [], "consolidation": JobTrigger(cron="0 3 * * *")}
                )
            }
        )
        done = sync_jobs(again, job_specs(changed, config))
        assert done == {
            f"persona-refresh:{DEFAULT_TRADER}": "removed",
            "consolidation": "replaced",
            "outcomes": "kept",
        }
        jobs = {j.id: j for j in again.get_jobs()}
        assert sorted(jobs) == ["consolidation", "outcomes"]  # one job per id, always
        assert str(jobs["consolidation"].trigger).startswith("cron[")
        assert jobs["consolidation"].coalesce and jobs["consolidation"].max_instances == 1
        # a new misfire grace time replaces the stored jobs (their own copy of it)
        grace = changed.scheduler.misfire_grace_s + 60
        done = sync_jobs(again, job_specs(changed, config), misfire_grace_s=grace)
        assert done == {"consolidation": "replaced", "outcomes": "replaced"}
        assert {j.misfire_grace_time for j in again.get_jobs()} == {grace}
    finally:
        again.shutdown()


def test_a_new_paper_delay_replaces_the_stored_paper_job() -> None:
    """``paper.delay_s`` is the start of an epoch-anchored interval, which its text
    (``interval[1:00:00]``) does not show: a changed delay still replaces the job."""
    from backend.service.scheduler import JobSpec, _same, paper_trigger

    scheduler = build_scheduler(load_settings(), persistent=False)
    scheduler.start(paused=True)
    try:
        spec = JobSpec(id="paper:x", name="paper", func="backend.service.jobs:paper_step",
                       args=("c", "binance", "BTC/USDT", "1h"),
                       trigger=paper_trigger("1h", 5.0))  # fmt: skip
        assert sync_jobs(scheduler, [spec]) == {"paper:x": "added"}
        assert sync_jobs(scheduler, [spec]) == {"paper:x": "kept"}
        later = JobSpec(**{**spec.__dict__, "trigger": paper_trigger("1h", 600.0)})
        assert not _same(scheduler.get_job("paper:x"), later, None)
        assert sync_jobs(scheduler, [later]) == {"paper:x": "replaced"}
    finally:
        scheduler.shutdown()


def test_a_weekly_paper_step_fires_at_the_monday_close() -> None:
    """A reviewer's: the interval counted weeks from the epoch, a Thursday, so a weekly
    bar (Binance's open on Mondays) was decided three days late; a job stored with that
    anchor is replaced."""
    from backend.service.scheduler import JobSpec, _same, paper_trigger

    monday = datetime(2025, 9, 15, tzinfo=UTC)
    fire = paper_trigger("1w", 5.0).get_next_fire_time(None, monday + timedelta(hours=1))
    assert fire == monday + timedelta(days=7, seconds=5)  # the next Monday's close + 5 s
    assert paper_trigger("1h", 5.0).get_next_fire_time(None, monday) == monday + timedelta(
        seconds=5
    )
    scheduler = build_scheduler(load_settings(), persistent=False)
    scheduler.start(paused=True)
    try:
        thursday = IntervalTrigger(weeks=1, start_date=datetime(1970, 1, 1, 0, 0, 5, tzinfo=UTC),
                                   timezone=UTC)  # fmt: skip
        spec = JobSpec(id="paper:w", name="paper", func="backend.service.jobs:paper_step",
                       args=("c", "binance", "BTC/USDT", "1w"), trigger=thursday)  # fmt: skip
        assert sync_jobs(scheduler, [spec]) == {"paper:w": "added"}
        monday_spec = JobSpec(**{**spec.__dict__, "trigger": paper_trigger("1w", 5.0)})
        assert not _same(scheduler.get_job("paper:w"), monday_spec, None)
        assert sync_jobs(scheduler, [monday_spec]) == {"paper:w": "replaced"}
    finally:
        scheduler.shutdown()


def test_runs_missed_while_down_coalesce_into_one_run_at_restart(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    path = make_config("missed")
    settings, config = load_settings(path), str(path)
    clock = tmp_path / "clock.json"
    job = clock_job(clock, every_s=60, work_s=0)
    down = build_scheduler(settings)
    down.start(paused=True)
    sync_jobs(down, [*job_specs(settings, config), job])
    down.shutdown()
    # the service was down for ten minutes: ten runs of the one-minute job were missed
    store = SQLAlchemyJobStore(url=settings.scheduler.jobstore_url)
    store.start(BackgroundScheduler(timezone=UTC), "default")
    stored = store.lookup_job(job.id)
    assert stored is not None
    state = stored.__getstate__()
    state["next_run_time"] = datetime.now(UTC) - timedelta(minutes=10)
    stored.__setstate__(state)
    store.update_job(stored)
    store.shutdown()

    service = start_service(settings, config, extra=[job])
    try:
        wait_for(lambda: clock_state(clock)["bar"] == 1, timeout=20)
        wait_for(lambda: service.get_job(job.id).next_run_time > datetime.now(UTC))
    finally:
        service.shutdown(wait=True)
    assert clock_state(clock)["bar"] == 1  # one run for the ten missed ones


def test_a_paper_job_runs_the_bar_close_it_missed_at_restart(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    """A reviewer's finding: a 4h (or 1d) paper job whose bar close was missed by more
    than ``scheduler.misfire_grace_s`` (1 h) while the service was down was skipped to
    the next close, not run at start as the docs say. A paper job's grace is at least
    its timeframe, so the coalesced missed run (at most one bar old) always runs."""
    paper = [{"pair": "BTC/USDT", "timeframe": "4h"}, {"pair": "ETH/USDT", "timeframe": "1d"}]
    path = make_config("paper-grace", scheduler={"paper": paper})
    settings = load_settings(path)
    specs = {s.id: s for s in job_specs(settings, str(path))}
    assert specs["paper:binance:BTC/USDT:4h"].misfire_grace_s == 4 * 3600
    assert specs["paper:binance:ETH/USDT:1d"].misfire_grace_s == 86_400
    assert specs["consolidation"].misfire_grace_s is None  # the configured 3600

    # the same grace on a job of the same shape: a 4h job missed 3 h ago runs at start
    clock = tmp_path / "clock.json"
    job = JobSpec(**{**clock_job(clock, every_s=4 * 3600, work_s=0).__dict__,
                     "misfire_grace_s": 4 * 3600})  # fmt: skip
    down = build_scheduler(settings)
    down.start(paused=True)
    sync_jobs(down, [*specs.values(), job], misfire_grace_s=settings.scheduler.misfire_grace_s)
    assert down.get_job(job.id).misfire_grace_time == 4 * 3600
    down.shutdown()
    missed = (datetime.now(UTC) - timedelta(hours=3)).replace(microsecond=0)
    store = SQLAlchemyJobStore(url=settings.scheduler.jobstore_url)
    store.start(BackgroundScheduler(timezone=UTC), "default")
    for job_id in (job.id, "paper:binance:BTC/USDT:4h"):
        stored = store.lookup_job(job_id)
        assert stored is not None
        state = stored.__getstate__()
        state["next_run_time"] = missed
        stored.__setstate__(state)
        store.update_job(stored)
    store.shutdown()
    # `scheduler jobs` shows the stored run the scheduler will make at start
    listed = {j.id: j.next_run_time for j in list_jobs(settings, str(path), now=missed)}
    assert listed["paper:binance:BTC/USDT:4h"] == missed
    service = build_scheduler(settings)
    service.start(paused=True)
    assert sync_jobs(service, [job], misfire_grace_s=3600)["sim-clock"] == "kept"
    service.resume()
    try:
        wait_for(lambda: clock_state(clock)["bar"] == 1, timeout=20)
    finally:
        service.shutdown(wait=True)


def test_overlapping_runs_are_skipped_on_an_accelerated_clock(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    path = make_config("overlap")
    settings, config = load_settings(path), str(path)
    clock = tmp_path / "clock.json"
    skipped: list[str] = []

    def on_skip(event: JobEvent) -> None:
        skipped.append(event.job_id)

    # a run every 50 ms that takes 200 ms: three of every four runs find one still going
    service = start_service(
        settings, config, extra=[clock_job(clock, every_s=0.05, work_s=0.2)], paused=True
    )
    service.add_listener(on_skip, EVENT_JOB_MAX_INSTANCES)
    service.resume()
    try:
        wait_for(lambda: int(clock_state(clock)["bar"]) >= 6)  # type: ignore[call-overload]
    finally:
        service.shutdown(wait=True)
    steps = clock_state(clock)["steps"]
    assert isinstance(steps, list)
    assert [s["bar"] for s in steps] == list(range(len(steps)))  # no lost update
    for before, after in itertools.pairwise(steps):
        assert after["start"] >= before["end"]  # never two at once
    assert skipped and set(skipped) == {"sim-clock"}


def test_a_jobstore_url_that_is_not_one_is_a_config_error() -> None:
    """``sentinel scheduler jobs`` reads the stored jobs without a scheduler: a bad URL
    is the usual one-line error (exit 2), not an internal one."""
    from backend.service._jobstore import stored_jobs

    with pytest.raises(ConfigError, match=r"scheduler\.jobstore_url: not a SQLAlchemy URL"):
        stored_jobs("not a url")


def test_a_jobstore_without_its_driver_or_directory_is_a_config_error(tmp_path: Path) -> None:
    """A database whose driver is not installed, or a SQLite file whose directory cannot be
    made, had ended as an internal error (exit 1)."""
    from backend.service.scheduler import build_scheduler

    settings = load_settings(None)
    for url, words in [
        ("postgresql+nodriver://u:p@127.0.0.1:1/jobs", "the postgresql.nodriver driver is not"),
        (f"sqlite:///{tmp_path}/file/jobs.sqlite", "cannot create"),
    ]:
        (tmp_path / "file").write_text("a file, not a directory")
        scheduler = settings.scheduler.model_copy(update={"jobstore_url": url})
        with pytest.raises(ConfigError, match=f"scheduler.jobstore_url: {words}"):
            build_scheduler(settings.model_copy(update={"scheduler": scheduler}))


def test_a_jobstore_that_cannot_be_opened_is_a_config_error(tmp_path: Path) -> None:
    """A SQLite URL on a directory, or on a file that is no database: an internal error
    (exit 1) at the store's first use, in ``scheduler jobs`` and ``scheduler run``."""
    from backend.service._jobstore import stored_jobs
    from backend.service.scheduler import start_service

    garbage = tmp_path / "jobs.sqlite"
    garbage.write_bytes(b"\x00not a database" * 40)
    with pytest.raises(ConfigError, match="cannot open the job store \\(file is not a database"):
        stored_jobs(f"sqlite:///{garbage}")
    (tmp_path / "dir.sqlite").mkdir()
    settings = load_settings(None)
    scheduler = settings.scheduler.model_copy(
        update={"jobstore_url": f"sqlite:///{tmp_path}/dir.sqlite", "persona_refresh": []}
    )
    with pytest.raises(ConfigError, match="cannot open the job store \\(unable to open"):
        start_service(settings.model_copy(update={"scheduler": scheduler}), "unused.yaml")


def test_a_live_paper_run_steps_now_and_then_at_every_bar_close() -> None:
    """``sentinel paper`` live: a first step now, then bar close + delay, whatever the
    start time (an interval trigger fired first at now had moved every later step to
    now + k hours, up to a bar late); a replay steps every --step-s from now."""
    from apscheduler.triggers.interval import IntervalTrigger

    from backend.service.scheduler import add_paper_jobs, paper_trigger

    now = datetime.now(UTC)
    step = ["c", "binance", "BTC/USDT", "1h", None, None]
    for live in (True, False):
        scheduler = build_scheduler(load_settings(), persistent=False)
        scheduler.start(paused=True)
        try:
            trigger = paper_trigger("1h", 5.0) if live else IntervalTrigger(seconds=2, timezone=UTC)
            add_paper_jobs(scheduler, trigger, job_id="paper:x", args=step, kwargs={},
                           now=now, live=live)  # fmt: skip
            times = {j.id: j.next_run_time for j in scheduler.get_jobs()}
        finally:
            scheduler.shutdown()
        if live:
            close = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
            expected = close + timedelta(seconds=5)
            if now < close - timedelta(hours=1) + timedelta(seconds=5):  # before this hour's
                expected -= timedelta(hours=1)
            assert times == {"paper:x": expected, "paper:x:first": now}
        else:
            assert times == {"paper:x": now}
