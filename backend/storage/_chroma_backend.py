"""The durable backend: chromadb collections (``PersistentClient`` or ``HttpClient``).

Every write goes to chroma before the store acknowledges it. Dense search is chroma's
HNSW; BM25 runs in process over a **row mirror** of each collection (text and metadata,
no vectors: a :class:`~backend.storage._lexical.LexicalIndex`), which also supplies the
rows of dense answers (fetching metadata from chroma costs ~70 us per row, measured) and
the old rows a write compares against. It is this backend's one cache. Other processes
write the same collections (the scheduler's persona refresh beside a paper-trading loop,
a CLI beside a server), so the mirror is **validated against the store**: it carries the
audit trail's per-trader change count it reflects (``AuditLog.changes``), every read
compares it with the trail's current count (one primary-key SQLite read and a stat of
the trail file, ~5 us measured) and rebuilds the mirror from chroma when another process
wrote since.

An embedded chroma (``PersistentClient``) has a second in-process copy, its own: each
process loads a collection's HNSW index at its first query, and a dense search then does
not find what another process wrote after that (measured with chromadb 1.5.9: the other
process's row is in ``get`` at once, in ``query`` not, whatever the wait, until this
process writes to that collection itself). The same change count tells: when a read
finds the trader's count moved by a write that was not this process's, the client is
reopened (``reopen``: close, then a new ``PersistentClient``, which loads the index from
disk and the log; 16 ms at 3,000 rows, 44 ms at 20,000, measured), so the next dense
search sees it. After a reopen every collection's index is known only to be at least as
new as the last count read for it (it loads at its first query). Chroma shares one client
state per path within a process: a reopen refreshes nothing while another client of the
same path is open in this process (two stores on one path in one process see each
other's writes anyway). This process's own writes move the count too: they are folded
in (:meth:`written`, in any order), and a reader's count read before another thread's
write (lower than the index's) changes nothing. Every chroma call holds the backend's
lock, so no thread uses a client being closed; two threads' queries on one store then
run one after the other (a reader measured 2 threads x 200 unfiltered queries at 10k
rows: 0.33 s with the lock, 0.25 s without). A chroma server needs none of this: it
holds the one index.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection

from backend.errors import StoreError
from backend.storage._backend import StoredRow, VectorBackend
from backend.storage._chroma_calls import FAULTS as _FAULTS
from backend.storage._chroma_calls import fault as _fault
from backend.storage._chroma_calls import got, opened, read_all, similarities
from backend.storage._codec import meta_ts
from backend.storage._lexical import Filter, LexicalIndex, Row, Stemmer

__all__ = ["ChromaBackend"]


class ChromaBackend(VectorBackend):
    """chromadb collections with a validated in-process row mirror (module doc)."""

    kind = "chroma"
    shared = True

    def __init__(
        self,
        client: ClientAPI,
        *,
        hnsw: Mapping[str, int],
        stemmer: Stemmer | None,
        reopen: Callable[[], ClientAPI] | None = None,
    ) -> None:
        """``hnsw``: chroma's HNSW configuration of new collections (``ef_search``,
        ``ef_construction``); ``stemmer``: of the BM25 mirror; ``reopen``: a new client
        on the same data, for an embedded chroma (module doc; None: a server)."""
        self.client = client
        self._reopen = reopen
        self._indexed: dict[str, int] = {}
        """Collection name -> the change count chroma's in-process index reflects
        (embedded chroma only: what :meth:`validate` compares to reopen the client)."""
        self._closed = False
        """A reopen closed the client and failed to open a new one: the next call tries
        again (instead of calling a closed client)."""
        self._own: dict[str, set[int]] = {}
        """Collection name -> change counts of this process's writes not yet folded into
        :attr:`_indexed` (two writer threads may report theirs in either order)."""
        self._known: set[str] = set()
        """Every collection opened (fetched again from a reopened client as used)."""
        self._hnsw = {"space": "cosine", **hnsw}
        self._stemmer = stemmer
        self._cols: dict[str, Collection] = {}
        """Collection name -> its handle (``get_collection`` costs ~0.23 ms embedded, an
        HTTP round trip on a server, and a decision opens its trader's collection several
        times; measured 2026-12-07); cleared at a reopen."""
        self._mirrors: dict[str, tuple[int | None, LexicalIndex]] = {}
        """Collection name -> (change count it reflects, None = unknown; the mirror)."""
        self._stamps: dict[str, int] = {}
        """Collection name -> the change count the last :meth:`validate` saw."""
        self._lock = threading.RLock()
        try:
            self.max_batch = int(client.get_max_batch_size())
        except Exception as exc:  # chromadb raises httpx and Rust errors alike
            raise StoreError(f"chroma: {type(exc).__name__}: {exc}") from None

    # ----------------------------------------------------------------- collections

    def collection(self, name: str) -> Collection:
        """The chroma collection ``name`` (must exist: :meth:`open` it first), fetched
        again from the client after a reopen. Call chroma with it under the backend's
        lock (module doc). Raises :class:`StoreError` (not open, dropped by another
        process, the client could not be reopened)."""
        with self._lock:
            col = self._cols.get(name)
            if col is not None and not self._closed:
                return col
            if name not in self._known:
                raise StoreError(f"chroma collection {name} is not open")
            try:
                found = opened(self._live(), name, create=None, hnsw=self._hnsw)
            except _FAULTS as exc:
                raise _fault(f"opening collection {name}", exc) from None
            if found is None:
                self._known.discard(name)
                self._mirrors.pop(name, None)
                raise StoreError(f"chroma collection {name} was dropped")
            self._cols[name] = col = found
            return col

    def _live(self) -> ClientAPI:
        """The client, reopened first if a reopen failed (under the lock)."""
        if self._closed:
            self._reopened()
        return self.client

    def _reopened(self) -> None:
        """A new client on the same data (module doc); the collections are fetched again
        as they are used (:meth:`collection`). Under the lock. Raises the
        :class:`StoreError` of a client that cannot be opened: the next call tries
        again."""
        assert self._reopen is not None
        close = getattr(self.client, "close", None)  # not in ClientAPI; Client has it
        if callable(close) and not self._closed:
            with contextlib.suppress(Exception):  # chromadb raises Rust and Python errors
                close()
        self._closed = True
        self._cols.clear()
        # a new client loads a collection's index at its first query, at least as new as
        # every count read before now: those counts are a safe floor (clearing them let a
        # write in between pass as already indexed)
        self._indexed = dict(self._stamps)
        self._own.clear()
        self.client = self._reopen()  # raises StoreError (the path is gone, ...)
        self._closed = False

    def open(self, name: str, *, create: Mapping[str, Any] | None) -> dict[str, Any] | None:
        with self._lock:
            col = self._cols.get(name) if not self._closed else None
            if col is None:
                try:
                    col = opened(self._live(), name, create=create, hnsw=self._hnsw)
                except _FAULTS as exc:
                    raise _fault(f"opening collection {name}", exc) from None
                if col is None:
                    return None
                self._cols[name] = col
                self._known.add(name)
            return dict(col.metadata or {})

    def set_metadata(self, name: str, metadata: Mapping[str, Any]) -> None:
        """Replace the metadata of the open collection ``name``. Raises :class:`StoreError`."""
        with self._lock:
            try:
                self.collection(name).modify(metadata=dict(metadata))
            except _FAULTS as exc:
                raise _fault(f"modifying collection {name}", exc) from None

    def collections(self, prefix: str) -> dict[str, dict[str, Any]]:
        try:
            with self._lock:
                found = self._live().list_collections()
        except _FAULTS as exc:
            raise _fault("listing collections", exc) from None
        return {c.name: dict(c.metadata or {}) for c in found if c.name.startswith(prefix)}

    # ----------------------------------------------------------------------- writes

    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        texts: Sequence[str],
        metas: Sequence[dict[str, Any]],
    ) -> None:
        try:
            with self._lock:
                self.collection(name).upsert(
                    ids=list(ids),
                    embeddings=vectors,
                    documents=list(texts),
                    metadatas=list(metas),
                )
        except _FAULTS as exc:
            raise _fault(f"upsert into {name}", exc) from None
        mirror = self._mirror_if_built(name)
        if mirror is not None:
            mirror.put(
                (rid, text, meta_ts(meta), meta)
                for rid, text, meta in zip(ids, texts, metas, strict=True)
            )

    def update(self, name: str, ids: Sequence[str], metas: Sequence[dict[str, Any]]) -> None:
        old = self.lookup(name, ids)
        # chroma's update merges metadata: None deletes the keys the new one lacks
        merged = [
            {**{key: None for key in old.get(rid, ("", {}))[1] if key not in meta}, **meta}
            for rid, meta in zip(ids, metas, strict=True)
        ]
        try:
            with self._lock:
                self.collection(name).update(ids=list(ids), metadatas=merged)  # type: ignore[arg-type]
        except _FAULTS as exc:
            raise _fault(f"update of {name}", exc) from None
        mirror = self._mirror_if_built(name)
        if mirror is not None:
            mirror.put(
                (rid, old[rid][0], meta_ts(meta), meta)
                for rid, meta in zip(ids, metas, strict=True)
                if rid in old
            )

    def delete(self, name: str, ids: Sequence[str]) -> None:
        try:
            with self._lock:
                self.collection(name).delete(ids=list(ids))
        except _FAULTS as exc:
            raise _fault(f"delete from {name}", exc) from None
        mirror = self._mirror_if_built(name)
        if mirror is not None:
            mirror.remove(ids)

    def validate(self, name: str, stamp: int) -> None:
        """(Module doc.) A ``stamp`` below what is held comes from a reader of this
        process that read the count before another thread's write: it changes nothing."""
        with self._lock:
            self._stamps[name] = max(stamp, self._stamps.get(name, stamp))
            held = self._mirrors.get(name)
            if held is not None and (held[0] is None or held[0] < stamp):
                del self._mirrors[name]
            if self._reopen is not None:
                indexed = self._indexed.get(name)
                if self._closed or (indexed is not None and indexed < stamp):
                    self._reopened()  # another process wrote (or a reopen failed)
                    indexed = None
                self._indexed[name] = max(stamp, indexed if indexed is not None else stamp)

    def written(self, name: str, stamp: int) -> None:
        with self._lock:
            indexed = self._indexed.get(name)
            if indexed is not None and stamp > indexed:
                # this process's writes are in its index: fold in every own count that
                # follows the indexed one (a gap is another process's write)
                own = self._own.setdefault(name, set())
                own.add(stamp)
                while indexed + 1 in own:
                    indexed += 1
                    own.discard(indexed)
                self._indexed[name] = indexed
                self._own[name] = {c for c in own if c > indexed}
            held = self._mirrors.get(name)
            if held is None:
                return
            if held[0] is not None and held[0] == stamp - 1:
                self._mirrors[name] = (stamp, held[1])
                self._stamps[name] = stamp
            else:  # another process wrote in between: rebuild at the next read
                del self._mirrors[name]

    def forget(self, name: str) -> None:
        with self._lock:
            self._mirrors.pop(name, None)

    # ------------------------------------------------------------------------ reads

    def _mirror_if_built(self, name: str) -> LexicalIndex | None:
        with self._lock:
            held = self._mirrors.get(name)
            return None if held is None else held[1]

    def _mirror(self, name: str) -> LexicalIndex:
        """The collection's row mirror, built from chroma if missing (stamped with the
        change count the last :meth:`validate` saw, read before chroma is)."""
        with self._lock:
            held = self._mirrors.get(name)
            if held is not None:
                return held[1]
            stamp = self._stamps.get(name)
            col = self.collection(name)
            try:
                mirror = read_all(col, max_batch=self.max_batch, stemmer=self._stemmer)
            except _FAULTS as exc:
                raise _fault(f"get from {name}", exc) from None
            self._mirrors[name] = (stamp, mirror)
            return mirror

    def rows(
        self, name: str, ids: Sequence[str], *, embeddings: bool = False
    ) -> dict[str, StoredRow]:
        out: dict[str, StoredRow] = {}
        include = ["documents", "metadatas"] + (["embeddings"] if embeddings else [])
        ids = list(ids)
        for start in range(0, len(ids), self.max_batch):
            try:
                with self._lock:
                    page = self.collection(name).get(
                        ids=ids[start : start + self.max_batch],
                        include=include,  # type: ignore[arg-type]
                    )
            except _FAULTS as exc:
                raise _fault(f"get from {name}", exc) from None
            embs = page["embeddings"] if embeddings else None
            for i, (rid, doc, meta) in enumerate(got(page)):
                vec = None if embs is None else np.asarray(embs[i], dtype=np.float32)
                out[rid] = (doc, meta, vec)
        return out

    def lookup(self, name: str, ids: Sequence[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        return {
            rid: (text, meta) for rid, (text, _, meta) in self._mirror(name).lookup(ids).items()
        }

    def scan(
        self, name: str, *, where: Filter, as_of_ts: float
    ) -> list[tuple[str, str, dict[str, Any]]]:
        try:
            with self._lock:
                page = self.collection(name).get(
                    where=where.to_chroma(as_of_ts=as_of_ts),
                    include=["documents", "metadatas"],
                )
        except _FAULTS as exc:
            raise _fault(f"get from {name}", exc) from None
        return got(page)

    def count(self, name: str, *, as_of_ts: float | None) -> int:
        try:
            with self._lock:
                col = self.collection(name)
                if as_of_ts is None:
                    return int(col.count())
                page = col.get(where={"created_at_ts": {"$lte": as_of_ts}}, include=[])  # type: ignore[dict-item]
        except _FAULTS as exc:
            raise _fault(f"count of {name}", exc) from None
        return len(page["ids"])

    def _query(
        self, name: str, vec: np.ndarray, n: int, where: dict[str, Any] | None
    ) -> list[tuple[str, float]]:
        try:
            with self._lock:
                res = self.collection(name).query(
                    query_embeddings=vec[None, :],
                    n_results=n,
                    where=where,
                    include=["distances"],
                )
        except _FAULTS as exc:
            raise _fault(f"query of {name}", exc) from None
        return similarities(res)

    def dense(
        self, name: str, vec: np.ndarray, *, n: int, where: Filter, as_of_ts: float
    ) -> list[Row]:
        """HNSW top-``n``, cheaply in the common case: chromadb's ``where`` pre-filter
        costs ~10-30 ms at 10k records (measured: it materialises the allowed set), so
        first ask chroma for the unfiltered top ``probe`` ids and distances, take their
        rows from the mirror and filter here: if at least ``n`` survive they are the top
        ``n`` allowed rows (every row outside the probe is farther), and if the collection
        has fewer than ``probe`` rows all were seen. Only otherwise is chroma's filtered
        query run."""
        probe = min(max(3 * n, 50), 1000)
        found = self._query(name, vec, probe, None)
        rows = self._with_rows(name, found)
        hits = [r for r in rows if meta_ts(r[2]) <= as_of_ts and where.matches(r[2])]
        if len(hits) < n and len(found) == probe:
            found = self._query(name, vec, n, where.to_chroma(as_of_ts=as_of_ts))
            hits = [r for r in self._with_rows(name, found) if meta_ts(r[2]) <= as_of_ts]
        return hits[:n]

    def _with_rows(self, name: str, found: list[tuple[str, float]]) -> list[Row]:
        """Text and metadata of ``(id, similarity)`` answers from the mirror; ids it lacks
        (a write racing this read) come from chroma."""
        mirror = self._mirror(name)
        known = mirror.lookup(rid for rid, _ in found)
        missing = [rid for rid, _ in found if rid not in known]
        extra = self.rows(name, missing) if missing else {}
        out: list[Row] = []
        for rid, sim in found:
            if rid in known:
                text, _, meta = known[rid]
                out.append((rid, text, meta, sim))
            elif rid in extra:
                out.append((rid, extra[rid][0], extra[rid][1], sim))
        return out

    def lexical(
        self, name: str, query: str, *, n: int, where: Filter, as_of_ts: float
    ) -> list[Row]:
        return self._mirror(name).search(query, top_k=n, as_of_ts=as_of_ts, where=where)
