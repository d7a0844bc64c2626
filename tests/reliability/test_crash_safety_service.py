"""Issue 7.1 — crash safety of the service: SIGKILL the scheduler and the paper loop.

Both tests start their processes through :mod:`tests.reliability.cli_forker` (the
session's ``forker``: imports paid once per session, then one fork per round), kill them
with SIGKILL at random moments (seeded RNG; the child's progress at a given moment is not
seeded) and reopen the files after every kill:

- **scheduler job store**: :mod:`tests.reliability.crash_scheduler` runs the project's
  scheduler (``start_service``) on a persistent SQLite job store with jobs firing every
  50-70 ms while it keeps re-syncing the store (kept / replaced / added-and-removed
  jobs). After each kill the store opens cleanly (``PRAGMA integrity_check``,
  apscheduler's ``SQLAlchemyJobStore`` directly and the project's ``list_jobs``), the
  configured jobs are there exactly once with their ids (the extra job at most once),
  and every job run the child acknowledged is in the ``job_run`` table.
- **paper-trading state**: a real ``sentinel paper`` replay (hashing embedder for speed:
  the decisions do not depend on the embedder's quality here, only on the state kept
  across restarts) on the loopback Binance with the real BTC/USDT 1h candles is killed
  and restarted on the same state dir; after each kill the state DB opens cleanly and
  holds exactly a prefix of an uninterrupted run (one decision and one equity mark per
  bar, no bar missing or twice, cash and position equal to the fills' sum), and at the
  end the decisions, fills, trades, equity marks and state equal the uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from backend.config import load_settings
from backend.service._db import ServiceDB
from backend.service.runtime import close_runtimes, config_key
from backend.service.scheduler import list_jobs
from tests.reliability.crash_scheduler import EXTRA_ID
from tests.reliability.forker import Forker
from tests.service.conftest import ConfigFactory, make_config  # noqa: F401  (fixture)
from tests.service.test_cli_service import RUN_ID, outcome

KILLS = 20
SEED = 7_2025


def _integrity(path: Path) -> None:
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def _err(log: Path) -> str:
    err = Path(f"{log}.err")
    return err.read_text(encoding="utf-8")[-4000:] if err.is_file() else ""


def _lines(log: Path) -> list[str]:
    text = log.read_text(encoding="utf-8") if log.is_file() else ""
    return text.split("\n")[:-1]  # a line cut by the kill has no newline: dropped


# ------------------------------------------------------------------ scheduler job store


def _stored_ids(url: str) -> list[str]:
    """The job ids in the store, read by apscheduler's SQLAlchemyJobStore itself."""
    store = SQLAlchemyJobStore(url=url)
    store.start(BackgroundScheduler(timezone=UTC), "default")
    try:
        jobs = store.get_all_jobs()  # unpickles every job: a torn row would raise here
        return [job.id for job in jobs]
    finally:
        store.shutdown()


@pytest.mark.slow
def test_scheduler_job_store_survives_sigkill(make_config: ConfigFactory, forker: Forker) -> None:  # noqa: F811
    config = make_config(
        "sched",
        scheduler={
            "persona_refresh": [],
            "consolidation": {"interval_s": 0.05},
            "outcomes": {"interval_s": 0.07},
        },
    )
    root = config.parent
    settings = load_settings(config)
    url = settings.scheduler.jobstore_url
    rng = random.Random(SEED)
    kills = early = acked_total = 0
    synced = False
    seen_variants: set[str] = set()
    for round_no in range(KILLS):
        log = root / f"round{round_no}.log"
        pid = forker.call(
            log, "tests.reliability.crash_scheduler:run", [str(config), str(round_no)]
        )
        # 20% of the kills while the child starts (opening the store, first sync)
        delay = rng.uniform(0.0, 0.2) if rng.random() < 0.2 else rng.uniform(0.2, 2.5)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        assert forker.wait(pid) == -signal.SIGKILL, _err(log)
        kills += 1
        lines = _lines(log)
        if "READY" not in lines:
            early += 1
        synced = synced or "READY" in lines
        seen_variants |= {ln.split()[1] for ln in lines if ln.startswith("SYNC ")}
        acked = {tuple(ln.split()[1:3]) for ln in lines if ln.startswith("ACK ")}
        acked_total += len(acked)

        jobs_db = Path(url.removeprefix("sqlite:///"))
        if jobs_db.is_file():
            _integrity(jobs_db)
        ids = _stored_ids(url)
        assert len(ids) == len(set(ids)), f"round {round_no}: a job twice: {ids}"
        if synced:  # once the configured jobs were synced, they never go away
            assert (
                {"consolidation", "outcomes"}
                <= set(ids)
                <= {
                    "consolidation",
                    "outcomes",
                    EXTRA_ID,
                }
            ), f"round {round_no}: {ids}"
            listed = list_jobs(settings, config_key(config), now=datetime.now(UTC))
            assert [j.id for j in listed] == ["consolidation", "outcomes"]
            assert all(j.next_run_time is not None for j in listed)
        state = root / "service.sqlite3"
        if acked:
            _integrity(state)
            db = ServiceDB(state)
            try:
                logged = {(job, ran_at) for job, ran_at, ok, _ in db.runs() if ok}
            finally:
                db.close()
            missing = acked - logged
            assert not missing, f"round {round_no}: acknowledged runs lost: {sorted(missing)}"
    print(
        f"\nscheduler: {kills} SIGKILLs ({early} before the first sync), "
        f"{acked_total} acknowledged job runs, variants synced {sorted(seen_variants)}"
    )
    assert kills >= KILLS and acked_total > 0
    assert seen_variants == {"added", "configured", "replaced"}


# ------------------------------------------------------------------ paper-trading state

REPLAY_FROM = "2022-05-10T00:00:00Z"
UNTIL = "2022-05-23T23:00:00Z"  # 336 hourly steps: 20 kills at 7-9 bars a round used 168
BARS = 336


def _paper_args(config: Path, url: str) -> list[str]:
    return [
        "--config", str(config), "paper", "--pair", "BTC/USDT", "--timeframe", "1h",
        "--exchange", "binance", "--api-url", url, "--replay-from", REPLAY_FROM,
        "--until", UNTIL, "--step-s", "0.02", "--json",
    ]  # fmt: skip


def _saved_bars(state_path: Path) -> int:
    if not state_path.is_file():
        return 0
    with sqlite3.connect(state_path) as db:
        try:
            row = db.execute("SELECT state FROM paper_run").fetchone()
        except sqlite3.OperationalError:
            return 0
    return int(json.loads(row[0])["bars"]) if row else 0


@dataclass
class Prefix:
    """What the state DB held after a kill: its first ``n`` bars."""

    n: int
    records: list[Any]
    marks: list[Any]
    fills: list[Any]
    trades: list[Any]


def _read_prefix(state_path: Path, initial_cash: float) -> Prefix:
    """The state opens cleanly and is consistent in itself: one decision and one equity
    mark per bar from the replay's first bar on, no bar missing or twice, cash and
    position equal to the fills' sum."""
    _integrity(state_path)
    db = ServiceDB(state_path)
    try:
        state = db.paper_state(RUN_ID)
        if state is None:
            assert not db.decisions(RUN_ID) and not db.fills(RUN_ID)
            return Prefix(0, [], [], [], [])
        records = [
            r.model_dump(mode="json", exclude={"retrieval_ms"}) for r in db.decisions(RUN_ID)
        ]
        fills = db.fills(RUN_ID)
        trades = db.trades(RUN_ID)
        marks = db.equity(RUN_ID).reset_index().values.tolist()
    finally:
        db.close()
    n = len(records)
    assert n == state.bars == len(marks)  # one decision and one mark per bar
    start = datetime.fromisoformat(REPLAY_FROM.replace("Z", "+00:00"))
    times = [start + timedelta(hours=i) for i in range(n)]
    assert [datetime.fromisoformat(str(r["as_of"])) for r in records] == times
    assert state.last_close == (times[-1] if n else None)
    quantity = sum(f.quantity for f in fills)
    cash = initial_cash - sum(f.quantity * f.price + f.fee for f in fills)
    assert state.broker.quantity == pytest.approx(quantity, rel=1e-9, abs=1e-12)
    assert state.broker.cash == pytest.approx(cash, rel=1e-9)
    return Prefix(n, records, marks, list(fills), list(trades))


def _check_prefix(prefix: Prefix, full: tuple[list[object], ...]) -> int:
    """``prefix`` is exactly the first n bars of the uninterrupted run ``full``
    (:func:`outcome`); returns n."""
    n = prefix.n
    assert prefix.records == full[0][:n]
    assert prefix.marks == full[3][:n]
    assert prefix.fills == full[1][: len(prefix.fills)]
    assert prefix.trades == full[2][: len(prefix.trades)]
    return n


@pytest.mark.slow
def test_paper_state_survives_sigkill(
    make_config: ConfigFactory,  # noqa: F811
    binance_loopback: str,
    forker: Forker,
) -> None:
    """Hashing embedder (the MiniLM version of the restart test is in
    tests/service/test_cli_service.py). The uninterrupted run goes on alongside the killed
    rounds (the machines have 2 cores); each kill's state is checked in itself at once and
    against the uninterrupted run once that has finished."""
    straight_cfg = make_config("straight")
    straight_log = straight_cfg.parent / "run.log"
    straight = forker.run(straight_log, _paper_args(straight_cfg, binance_loopback))

    config = make_config("killed")
    initial_cash = load_settings(config).backtest.initial_equity
    state_path = config.parent / "service.sqlite3"
    rng = random.Random(SEED)
    kills = early = 0
    progress: list[int] = []
    prefixes: list[Prefix] = []
    round_no = 0
    while kills < KILLS:
        log = config.parent / f"round{round_no}.log"
        before = _saved_bars(state_path)
        pid = forker.run(log, _paper_args(config, binance_loopback))
        if rng.random() < 0.2:  # while it starts: runtime, chroma, first fetch
            time.sleep(rng.uniform(0.0, 1.5))
        else:  # while it steps: wait for a saved step, then a random moment
            deadline = time.monotonic() + 120
            while _saved_bars(state_path) <= before:
                assert time.monotonic() < deadline, f"no progress: {_err(log)}"
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 1.0))
        os.kill(pid, signal.SIGKILL)
        code = forker.wait(pid)
        assert code == -signal.SIGKILL, f"round {round_no} ended by itself: make the run longer"
        kills += 1
        prefix = _read_prefix(state_path, initial_cash)
        prefixes.append(prefix)
        early += prefix.n == before
        progress.append(prefix.n)
        assert prefix.n >= before  # nothing saved is ever lost
        round_no += 1
    assert progress[-1] < BARS
    last_log = config.parent / "final.log"
    pid = forker.run(last_log, _paper_args(config, binance_loopback))
    assert forker.wait(straight) == 0, _err(straight_log)
    full = outcome(straight_cfg.parent / "service.sqlite3")
    assert len(full[0]) == BARS
    for prefix in prefixes:
        _check_prefix(prefix, full)
    assert forker.wait(pid) == 0, _err(last_log)
    assert _check_prefix(_read_prefix(state_path, initial_cash), full) == BARS
    got = outcome(state_path)
    assert got[0] == full[0]  # decisions: action, size, as_of, memories used, ...
    assert got[1:] == full[1:]  # fills, trades, equity marks, broker and manager state
    print(
        f"\npaper: {kills} SIGKILLs ({early} without a new saved bar), bars saved after "
        f"each kill {progress}; fills {len(full[1])}, trades {len(full[2])}"
    )
    close_runtimes()
