from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from backend.storage import AuditLog

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
