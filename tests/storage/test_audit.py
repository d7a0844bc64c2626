from __future__ import annotations

import socket
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backend.storage import AuditLog
from backend.storage._audit import PendingRow
from backend.storage._process import owner_gone, owner_stamp

AS_OF = datetime(2022, 6, 13, 4, 0, tzinfo=UTC)


def test_rows_commit_only_when_the_block_succeeds(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.sqlite3")
    with log.transaction(as_of=AS_OF) as tx:
        tx.record([("alice", "r1", "ADD", None, {"text": "a"})])
    with pytest.raises(RuntimeError), log.transaction(as_of=AS_OF) as tx:
        tx.record([("alice", "r2", "ADD", None, {"text": "b"})])
        raise RuntimeError("chroma failed")
    events = log.history("alice")
    assert [(e.record_id, e.event, e.new) for e in events] == [("r1", "ADD", {"text": "a"})]
    assert events[0].as_of == AS_OF
    log.close()
    reopened = AuditLog(tmp_path / "a.sqlite3")
    assert len(reopened.history("alice")) == 1 and reopened.history("bob") == []


def test_a_failed_write_keeps_the_rows_that_landed_anyway(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.sqlite3")

    def landed(rows: object) -> list[bool]:
        return [True, False]  # e.g. the first page of a batch reached chroma, not the second

    with pytest.raises(RuntimeError), log.transaction(as_of=AS_OF, landed=landed) as tx:
        tx.record(
            [
                ("alice", "r1", "ADD", None, {"text": "a"}),
                ("alice", "r2", "ADD", None, {"text": "b"}),
            ]
        )
        assert log.pending() == 2 and log.history("alice") == []  # written ahead, not history
        raise RuntimeError("chroma failed on the second page")
    assert [e.record_id for e in log.history("alice")] == ["r1"] and log.pending() == 0


def test_rows_of_a_dead_writer_are_settled_at_recovery(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    log = AuditLog(path)
    log._insert(  # what a writer killed between its two commits leaves behind
        [
            ("alice", "r1", "ADD", None, {"text": "a"}),
            ("alice", "r2", "DELETE", {"text": "b"}, None),
            ("bob", "r3", "ADD", None, {"text": "c"}),
        ],
        AS_OF.isoformat(),
    )
    log.close()
    with sqlite3.connect(path) as conn:  # owned by a process that no longer exists
        conn.execute("UPDATE memory_audit SET owner = ?", (f"{socket.gethostname()}:{2**22 + 7}",))
    reopened = AuditLog(path)
    seen: list[str] = []

    def landed(rows: Sequence[PendingRow]) -> list[bool]:
        seen.extend(r.record_id for r in rows)
        return [r.record_id != "r3" for r in rows]

    assert reopened.recover(landed) == (2, 1)
    assert seen == ["r1", "r2", "r3"]
    assert [(e.record_id, e.event) for e in reopened.history("alice")] == [
        ("r1", "ADD"),
        ("r2", "DELETE"),
    ]
    assert reopened.history("bob") == [] and reopened.pending() == 0
    assert reopened.recover(landed) == (0, 0)


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs procfs")
def test_rows_of_an_earlier_process_with_this_pid_are_recovered(tmp_path: Path) -> None:
    """pid 1 of a container after a restart, or a pid used again: with ``host:pid`` as
    the owner, a crashed write's rows were taken as this process's own and stayed
    pending for good (the trail never recorded what chroma held)."""
    path = tmp_path / "a.sqlite3"
    log = AuditLog(path)
    log._insert([("alice", "r1", "ADD", None, {"text": "a"})], AS_OF.isoformat())
    log.close()
    own = owner_stamp()
    host, pid, start = own.rsplit(":", 2)
    with sqlite3.connect(path) as conn:  # this pid, started at another time
        conn.execute("UPDATE memory_audit SET owner = ?", (f"{host}:{pid}:{int(start) + 1}",))
    reopened = AuditLog(path)
    assert reopened.recover(lambda rows: [True] * len(rows)) == (1, 0)
    assert [e.record_id for e in reopened.history("alice")] == ["r1"]
    assert not owner_gone(own) and owner_gone(f"{host}:{pid}:{int(start) + 1}")
    assert not owner_gone(f"{host}:{pid}")  # a stamp written before the start was kept


def test_rows_of_a_live_writer_are_left_alone(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.sqlite3")
    log._insert([("alice", "r1", "ADD", None, {"text": "a"})], AS_OF.isoformat())
    other = AuditLog(tmp_path / "a.sqlite3")  # same process: its write may be in flight
    assert other.recover(lambda rows: [True] * len(rows)) == (0, 0) and other.pending() == 1


def test_change_count_grows_by_one_per_confirmed_write_of_any_process(tmp_path: Path) -> None:
    """``changes(trader)``: what the chroma backend validates its row mirror against."""
    one, two = AuditLog(tmp_path / "a.sqlite3"), AuditLog(tmp_path / "a.sqlite3")
    assert one.changes("alice") == 0
    with one.transaction(as_of=AS_OF) as tx:  # one write of two rows: one change
        tx.record([("alice", "r1", "ADD", None, {"t": 1}), ("alice", "r2", "ADD", None, {"t": 2})])
    assert tx.changes == {"alice": 1} and two.changes("alice") == 1
    with pytest.raises(RuntimeError), two.transaction(as_of=AS_OF) as failed:
        failed.record([("alice", "r3", "ADD", None, {"t": 3})])
        raise RuntimeError("chroma failed")  # nothing landed: no change
    assert one.changes("alice") == 1 and failed.changes == {}
    with two.transaction(as_of=AS_OF) as tx:
        tx.record([("alice", "r1", "DELETE", {"t": 1}, None), ("bob", "r9", "ADD", None, {})])
    assert tx.changes == {"alice": 2, "bob": 1}
    assert (one.changes("alice"), one.changes("bob"), one.changes("carol")) == (2, 1, 0)
    memory = AuditLog(None)  # the memory backend's trail: in process, nothing on disk
    with memory.transaction(as_of=AS_OF) as tx:
        tx.record([("alice", "r1", "ADD", None, {})])
    assert memory.changes("alice") == 1 and memory.path == Path(":memory:")


def test_changed_since_never_passes_a_write_still_in_flight(tmp_path: Path) -> None:
    """``change_cursor``/``changed_since``: what the state index of episodic memory is
    brought up to date with. A write another process has begun but not confirmed (a
    pending row) is reported by a later call, never skipped by the cursor."""
    one, two = AuditLog(tmp_path / "a.sqlite3"), AuditLog(tmp_path / "a.sqlite3")
    start = one.change_cursor("alice")
    with one.transaction(as_of=AS_OF) as tx:
        tx.record([("alice", "r1", "ADD", None, {}), ("bob", "b1", "ADD", None, {})])
    in_flight = two._insert([("alice", "r2", "ADD", None, {})], AS_OF.isoformat())
    with one.transaction(as_of=AS_OF) as tx:
        tx.record([("alice", "r3", "ADD", None, {}), ("alice", "r1", "UPDATE", {}, {})])
    assert one.change_cursor("alice") == in_flight[0] - 1  # not past the pending row
    cursor, ids = one.changed_since("alice", start)
    assert ids == ["r1", "r3"] and cursor == in_flight[0] - 1
    two._set_done(in_flight)  # the other process confirms its write
    cursor, ids = one.changed_since("alice", cursor)
    assert ids == ["r2", "r3", "r1"] and cursor == one.change_cursor("alice")
    assert one.changed_since("alice", cursor) == (cursor, [])
    assert one.changed_since("carol", start) == (start, [])


def test_a_trail_written_before_the_state_column_opens_and_reads(tmp_path: Path) -> None:
    """A trail of the first schema (no ``state``/``owner`` columns, no pending index) is
    migrated on open: its rows are confirmed history and the change reads work."""
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE memory_audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, trader_id TEXT "
            "NOT NULL, record_id TEXT NOT NULL, event TEXT NOT NULL, old TEXT, new TEXT, "
            "as_of TEXT NOT NULL)"
        )
        conn.execute(
            "INSERT INTO memory_audit (trader_id, record_id, event, new, as_of) "
            "VALUES ('alice', 'r1', 'ADD', '{}', ?)",
            (AS_OF.isoformat(),),
        )
    log = AuditLog(path)
    assert [e.record_id for e in log.history("alice")] == ["r1"]
    assert log.change_cursor("alice") == 1 and log.changed_since("alice", 0) == (1, ["r1"])
    assert log.pending() == 0


def test_a_writer_lock_that_cannot_be_opened_is_a_store_error(tmp_path: Path) -> None:
    """A store that turned read-only (here: a directory where the lock file goes, which
    fails as a read-only file system does, with an OSError, even as root) is the store's
    one-line error, never an internal error."""
    from backend.errors import StoreError

    log = AuditLog(tmp_path / "audit.db")
    try:
        (tmp_path / "audit.db.writer.lock").mkdir()
        with (
            pytest.raises(StoreError, match=r"writer\.lock: cannot take the writer lock"),
            log.writer_lock(),
        ):
            pass
    finally:
        log.close()


def test_the_last_write_is_compared_as_a_time_whatever_offset_a_trail_stamped(
    tmp_path: Path,
) -> None:
    """A trail of an older release stamped the caller's UTC offset: as text,
    ``10:00+09:00`` (01:00Z) sorted after ``05:00+00:00``, and a replay at 03:00Z was let
    write into a past written at 05:00Z."""
    from datetime import timedelta, timezone

    log = AuditLog(tmp_path / "a.sqlite3")
    assert log.last_written("alice") is None
    five = datetime(2024, 1, 1, 5, tzinfo=UTC)
    with log.transaction(as_of=five) as tx:
        tx.record([("alice", "r1", "ADD", None, {"text": "a"})])
    tokyo = datetime(2024, 1, 1, 10, tzinfo=timezone(timedelta(hours=9)))
    with log.transaction(as_of=tokyo) as tx:
        tx.record([("alice", "r2", "ADD", None, {"text": "b"})])
    assert log.last_written("alice") == five
    log._conn.execute(  # as the older release stamped it
        "UPDATE memory_audit SET as_of = ? WHERE record_id = 'r2'", (tokyo.isoformat(),)
    )
    assert log.last_written("alice") == five and log.last_written("bob") is None
