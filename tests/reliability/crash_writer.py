"""A process that writes memories to a persistent Khala store until it is killed.

Run by ``tests/reliability/test_crash_safety.py`` as a fork of the session's warm
launcher (:mod:`tests.reliability.cli_forker`: ``CALL ... crash_writer:forked``), or by
hand as ``python -m tests.reliability.crash_writer --root DIR --round N --seed S``. It:

1. opens the embedded store at ``DIR`` (chroma data + SQLite audit trail; opening settles
   the audit rows a killed writer left pending), and prints ``STATE <json>``: every
   record of every trader (id -> sha256 of its content), the last audit event of every
   record id, the audit rows settled at open, and whether a dense and a BM25 search and a
   count still work — what a restart finds;
2. prints ``READY`` and then, forever (or ``--max-ops`` times), one write at a time:
   ``INTENT <json>`` (the op and the content hash each record will have, ``null`` for a
   delete), the write itself (``KhalaStore.upsert`` / ``update`` / ``delete``), then
   ``ACK <seq>`` once the call has returned. Lines are flushed one by one, so the parent
   knows exactly which writes were acknowledged when it sends SIGKILL.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from backend.config import StoreSettings
from backend.embeddings import HashingEmbedder
from backend.storage import KhalaStore, MemoryRecord, open_store

TRADERS = ("alice", "bob", "carol")
FAR = datetime(9999, 1, 1, tzinfo=UTC)
WORDS = [
    "bitcoin",
    "ether",
    "solana",
    "funding",
    "liquidation",
    "rally",
    "crash",
    "halving",
    "etf",
    "outflow",
    "inflow",
    "whale",
    "stablecoin",
    "depeg",
    "leverage",
    "short",
    "squeeze",
    "breakout",
    "support",
    "resistance",
    "volume",
]


def _canonical(value: Any) -> Any:
    """Floats to 12 significant digits: chromadb gives back about one metadata float in
    nine one ulp off what was written (see ``KhalaStore.upsert``)."""
    if isinstance(value, float):
        return f"{value:.12g}"
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    return value


def content_hash(content: dict[str, Any]) -> str:
    """sha256 of a record's content (``MemoryRecord.content()``), canonical JSON."""
    canonical = json.dumps(_canonical(content), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def open_at(root: Path) -> KhalaStore:
    settings = StoreSettings(path=root / "khala", audit_path=root / "audit.sqlite3")
    return open_store(settings, HashingEmbedder())


def state(store: KhalaStore) -> dict[str, Any]:
    """Everything a restart finds: records, last audit event per id, index health."""
    out: dict[str, Any] = {"records": {}, "audit": {}, "counts": {}, "search": {}}
    out["recovered"] = list(store.recovered)
    for trader in TRADERS:
        records = store.scan(trader, as_of=FAR)
        out["records"][trader] = {r.id: content_hash(r.content()) for r in records}
        out["counts"][trader] = store.count(trader)
        last: dict[str, list[Any]] = {}
        for event in store.history(trader):
            last[event.record_id] = [
                event.event,
                content_hash(event.new) if event.new is not None else None,
            ]
        out["audit"][trader] = last
        if records:
            probe = records[len(records) // 2]
            dense = store.search(trader, probe.text, as_of=FAR, top_k=5, method="dense")
            bm25 = store.search(trader, probe.text, as_of=FAR, top_k=5, method="bm25")
            out["search"][trader] = [
                bool(dense) and all(h.record.trader_id == trader for h in dense),
                bool(bm25) and all(h.record.trader_id == trader for h in bm25),
                any(h.record.id == probe.id for h in dense),
            ]
    return out


def emit(tag: str, payload: object = None) -> None:
    line = tag if payload is None else f"{tag} {json.dumps(payload, sort_keys=True)}"
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)) + f" #{rng.randrange(10**9)}"


def run(root: Path, round_no: int, seed: int, max_ops: int | None) -> None:
    store = open_at(root)
    found = state(store)
    emit("STATE", found)
    emit("READY")
    rng = random.Random(seed)
    live = {t: set(found["records"][t]) for t in TRADERS}
    base = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=round_no)
    seq = 0
    while max_ops is None or seq < max_ops:
        seq += 1
        as_of = base + timedelta(seconds=seq)
        trader = rng.choice(TRADERS)
        roll = rng.random()
        mine = sorted(live[trader])
        if roll < 0.6 or len(mine) < 4:
            batch = [
                MemoryRecord(
                    id=f"r{round_no}-{seq}-{i}",
                    trader_id=trader,
                    text=text(rng, rng.randint(3, 30)),
                    created_at=as_of,
                    kind=rng.choice(["note", "news", "episodic"]),
                    importance=round(rng.random(), 3),
                    metadata={"round": round_no, "seq": seq},
                )
                for i in range(rng.randint(1, 12))
            ]
            emit(
                "INTENT",
                {
                    "seq": seq,
                    "trader": trader,
                    "op": "upsert",
                    "records": {r.id: content_hash(r.content()) for r in batch},
                },
            )
            store.upsert(trader, batch, as_of=as_of)
            live[trader].update(r.id for r in batch)
        elif roll < 0.85:
            rid = rng.choice(mine)
            old = store.get(trader, [rid], as_of=as_of)[0]
            new = old.model_copy(
                update={"text": text(rng, rng.randint(3, 30)), "importance": rng.random()}
            )
            emit(
                "INTENT",
                {
                    "seq": seq,
                    "trader": trader,
                    "op": "update",
                    "records": {rid: content_hash(new.content())},
                },
            )
            store.update(trader, rid, as_of=as_of, text=new.text, importance=new.importance)
        else:
            gone = rng.sample(mine, k=min(len(mine), rng.randint(1, 3)))
            emit(
                "INTENT",
                {"seq": seq, "trader": trader, "op": "delete", "records": dict.fromkeys(gone)},
            )
            store.delete(trader, gone, as_of=as_of)
            live[trader].difference_update(gone)
        emit("ACK", seq)
    store.close()
    emit("DONE")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--round", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--max-ops", type=int, default=None)
    args = parser.parse_args(argv)
    run(args.root, args.round, args.seed, args.max_ops)


def forked(*argv: str) -> None:
    """Entry point in a child of :mod:`tests.reliability.cli_forker` (``CALL``)."""
    main(list(argv))


if __name__ == "__main__":
    main()
