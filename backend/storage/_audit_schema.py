"""The SQLite schema of the audit trail (:mod:`backend.storage._audit`): the events with
their ``pending``/``done`` state and owning process, the per-trader change counts, and
the columns a trail of an older release lacks (added when it is opened)."""

__all__ = ["MIGRATIONS", "SCHEMA"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS memory_audit (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    trader_id TEXT NOT NULL,
    record_id TEXT NOT NULL,
    event     TEXT NOT NULL CHECK (event IN ('ADD', 'UPDATE', 'DELETE')),
    old       TEXT,
    new       TEXT,
    as_of     TEXT NOT NULL,
    state     TEXT NOT NULL DEFAULT 'done' CHECK (state IN ('pending', 'done')),
    owner     TEXT
);
CREATE INDEX IF NOT EXISTS memory_audit_trader ON memory_audit (trader_id, record_id, seq);
CREATE TABLE IF NOT EXISTS memory_changes (
    trader_id TEXT PRIMARY KEY,
    n         INTEGER NOT NULL
);
"""
MIGRATIONS = {
    "state": "ALTER TABLE memory_audit ADD COLUMN state TEXT NOT NULL DEFAULT 'done'",
    "owner": "ALTER TABLE memory_audit ADD COLUMN owner TEXT",
}
