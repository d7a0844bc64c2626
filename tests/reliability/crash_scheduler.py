"""Child of the scheduler SIGKILL test: the project's scheduler on its persistent job store.

:func:`run` starts the service (:func:`backend.service.scheduler.start_service`: build,
start, :func:`sync_jobs` the configured jobs into the SQLite job store, resume), whose
configured jobs (``consolidation``, ``outcomes``) fire every few tens of ms, so
apscheduler rewrites their next run time in the store all the time. Meanwhile the main
thread keeps re-syncing the store (seeded RNG) to one of three job sets: the configured
one (all ``kept``), the configured one with ``consolidation`` on another interval (a
``replaced`` job, same id) and the configured one plus an ``extra`` job (``added``, then
``removed`` by the next configured sync). Lines on stdout (flushed):

- ``READY``: the configured jobs are synced and the scheduler runs;
- ``ACK <job id> <as_of>``: a job run returned, so its ``job_run`` row is committed
  (:func:`backend.service.jobs._run` commits it before returning);
- ``SYNC <variant>``: a re-sync returned.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import UTC
from pathlib import Path

from apscheduler.events import EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.triggers.interval import IntervalTrigger

from backend.config import load_settings
from backend.service.runtime import config_key
from backend.service.scheduler import JOBS_MODULE, JobSpec, job_specs, start_service, sync_jobs

EXTRA_ID = "extra"
_print_lock = threading.Lock()


def _say(line: str) -> None:
    with _print_lock:
        print(line, flush=True)


def variants(config: str) -> dict[str, list[JobSpec]]:
    """The three job sets the child syncs (module doc); ``configured`` is the config's."""
    settings = load_settings(Path(config))
    key = config_key(config)
    configured = job_specs(settings, key)
    slower = [
        JobSpec(
            id=s.id,
            name=s.name,
            func=s.func,
            args=s.args,
            trigger=IntervalTrigger(
                seconds=1.5 * (settings.scheduler.consolidation.interval_s or 1), timezone=UTC
            ),
        )
        if s.id == "consolidation"
        else s
        for s in configured
    ]
    extra = JobSpec(
        id=EXTRA_ID,
        name="an extra job added and removed again",
        func=f"{JOBS_MODULE}:outcomes",
        args=(key,),
        trigger=IntervalTrigger(hours=1, timezone=UTC),
    )
    return {"configured": configured, "replaced": slower, "added": [*configured, extra]}


def run(config: str, seed: str) -> None:
    logging.getLogger("apscheduler").setLevel(logging.ERROR)  # skipped runs: expected
    rng = random.Random(int(seed))
    sets = variants(config)
    settings = load_settings(Path(config))

    def on_run(event: JobExecutionEvent) -> None:
        if event.exception is None and isinstance(event.retval, dict):
            _say(f"ACK {event.job_id} {event.retval['as_of']}")

    scheduler = start_service(settings, config_key(config), paused=True)
    scheduler.add_listener(on_run, EVENT_JOB_EXECUTED)
    scheduler.resume()
    _say("READY")
    names = sorted(sets)
    while True:
        name = rng.choice(names)
        sync_jobs(scheduler, sets[name])
        _say(f"SYNC {name}")
        time.sleep(rng.uniform(0.0, 0.03))
