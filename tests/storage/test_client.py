"""The store factory's one audit trail per embedded chroma directory."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backend.config import StoreSettings
from backend.embeddings import HashingEmbedder
from backend.errors import ConfigError
from backend.storage import MemoryRecord, open_store
from backend.storage._client import TRAIL_MARKER

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def _note(record_id: str, text: str) -> MemoryRecord:
    return MemoryRecord(id=record_id, trader_id="t1", text=text, created_at=NOW, kind="note")


def test_a_second_audit_trail_for_one_chroma_directory_is_refused(tmp_path: Path) -> None:
    """A reviewer's finding: ``--store-path DIR`` keeps ``DIR/audit.db`` and ``DIR/khala``
    set as ``store.path`` kept ``DIR/khala/khala_audit.sqlite3``; each process validated
    its caches against its own trail and missed the other's writes (BM25, dense search
    and ``get`` found nothing of a record ``count`` included). A copied run directory
    still opens: the trail is named relative to the chroma directory."""
    embedder = HashingEmbedder(dim=16)
    run = StoreSettings(path=tmp_path / "run" / "khala", audit_path=tmp_path / "run" / "audit.db")
    first = open_store(run, embedder)
    first.upsert("t1", [_note("r1", "bananas bread recipe")], as_of=NOW)
    first.close()
    assert (run.path / TRAIL_MARKER).read_text(encoding="utf-8") == "../audit.db\n"

    configured = StoreSettings(path=run.path)  # the default trail under store.path
    with pytest.raises(ConfigError, match=r"keeps its audit trail at .*run/audit\.db, and this "):
        open_store(configured, embedder)
    assert not configured.resolved_audit_path.exists()  # nothing written for the refused

    same = open_store(run, embedder)
    assert [r.id for r in same.get("t1", ["r1"], as_of=NOW)] == ["r1"]
    same.close()

    shutil.copytree(tmp_path / "run", tmp_path / "copy")
    copy = StoreSettings(
        path=tmp_path / "copy" / "khala", audit_path=tmp_path / "copy" / "audit.db"
    )
    moved = open_store(copy, embedder)
    assert [h.record.id for h in moved.search("t1", "bananas", as_of=NOW, method="bm25")] == ["r1"]
    moved.close()


def test_the_first_opener_of_an_old_store_names_its_trail(tmp_path: Path) -> None:
    """A store of an older release has no marker: the first process to open it names the
    trail it keeps (under the chroma directory: a bare name)."""
    settings = StoreSettings(path=tmp_path / "khala")
    open_store(settings, HashingEmbedder(dim=16)).close()
    marker = settings.path / TRAIL_MARKER
    assert marker.read_text(encoding="utf-8") == "khala_audit.sqlite3\n"
    marker.unlink()
    open_store(settings, HashingEmbedder(dim=16)).close()
    assert marker.read_text(encoding="utf-8") == "khala_audit.sqlite3\n"


def test_an_empty_marker_or_a_trail_that_is_gone_is_pinned_again(tmp_path: Path) -> None:
    """A reviewer's findings: an empty marker (a crash while writing it) switched the
    check off for good, and a run directory whose ``khala`` is a symlink (the marker is
    absolute then) could not be opened once moved, though the trail it named was gone."""
    embedder = HashingEmbedder(dim=16)
    settings = StoreSettings(path=tmp_path / "khala")
    open_store(settings, embedder).close()
    marker = settings.path / TRAIL_MARKER
    marker.write_text("", encoding="utf-8")
    open_store(settings, embedder).close()
    assert marker.read_text(encoding="utf-8") == "khala_audit.sqlite3\n"
    other = StoreSettings(path=settings.path, audit_path=tmp_path / "elsewhere.db")
    with pytest.raises(ConfigError, match="keeps its audit trail"):
        open_store(other, embedder)  # the trail it names is there: refused

    disk = tmp_path / "disk" / "khala"
    (tmp_path / "run").mkdir()
    disk.mkdir(parents=True)
    (tmp_path / "run" / "khala").symlink_to(disk)
    linked = StoreSettings(
        path=tmp_path / "run" / "khala", audit_path=tmp_path / "run" / "audit.db"
    )
    open_store(linked, embedder).close()
    assert (disk / TRAIL_MARKER).read_text(encoding="utf-8").startswith("/")  # absolute
    (tmp_path / "run").rename(tmp_path / "moved")
    moved = StoreSettings(
        path=tmp_path / "moved" / "khala", audit_path=tmp_path / "moved" / "audit.db"
    )
    open_store(moved, embedder).close()
    assert (disk / TRAIL_MARKER).read_text(encoding="utf-8").strip().endswith("moved/audit.db")


@pytest.mark.server
def test_a_second_audit_trail_for_one_chroma_server_is_refused(
    tmp_path: Path, chroma_server: tuple[str, int]
) -> None:
    """A reviewer's: two processes on one chroma server with two trails (two
    ``store.audit_path``, or ``localhost`` and ``127.0.0.1`` in the default trail's
    name) kept 12 of the 24 bans they wrote, with no word. The server names its writers'
    trail; another is refused, a loopback host is one name, and a trail of this machine
    that is gone is replaced."""
    _, port = chroma_server
    at = datetime(2025, 1, 1, tzinfo=UTC)

    def server(**more: object) -> StoreSettings:
        settings: dict[str, object] = {"mode": "server", "host": "127.0.0.1", "port": port,
                                       "collection_prefix": "trailtest"}  # fmt: skip
        return StoreSettings(**(settings | more))  # type: ignore[arg-type]

    first = open_store(server(audit_path=tmp_path / "a.db"), HashingEmbedder())
    first.upsert("alice", [MemoryRecord(id="r1", trader_id="alice", kind="note", text="x",
                                        created_at=at)], as_of=at)  # fmt: skip
    with pytest.raises(ConfigError, match=r"is written with the audit trail .*a\.db"):
        open_store(server(audit_path=tmp_path / "b.db"), HashingEmbedder())
    again = open_store(server(audit_path=tmp_path / "a.db"), HashingEmbedder())
    assert again.get("alice", ["r1"], as_of=at)[0].text == "x"
    again.close()
    first.close()
    names = {server(host=h).local_file("audit", "x") for h in ("localhost", "127.0.0.1", "::1")}
    assert len(names) == 1
    (tmp_path / "a.db").unlink()  # the trail is gone: a new one of this machine takes over
    open_store(server(audit_path=tmp_path / "b.db"), HashingEmbedder()).close()
