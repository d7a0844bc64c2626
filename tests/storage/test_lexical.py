"""The BM25 side of the store (:class:`LexicalIndex`) under concurrent searches."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

from backend.storage._lexical import Filter, LexicalIndex, Row, _Built

ROWS: list[tuple[str, str, float, dict[str, Any]]] = [  # (id, text, created_at_ts, meta)
    ("r1", "bitcoin liquidations cascade", 1.0, {}),
    ("r2", "bitcoin funding rates flip negative", 2.0, {}),
    ("r3", "ether rallies ahead of the merge", 3.0, {}),
]


class _HandOver(dict[Any, Any]):
    """The fenced indexes a search keeps (``_Built.corpora``), which hand the thread that
    armed them over to ``race`` at its next read, before the item read is returned: another
    search replaces the kept index just then (the interleaving of two threads, forced)."""

    def __init__(self) -> None:
        super().__init__()
        self.race: Callable[[], None] | None = None
        self.owner: int | None = None

    def get(self, key: Any, default: Any = None) -> Any:
        item = super().get(key, default)
        if self.race is not None and threading.get_ident() == self.owner:
            race, self.race = self.race, None
            race()
        return item

    def arm(self, race: Callable[[], None]) -> None:
        self.race, self.owner = race, threading.get_ident()


class _RacedIndex(LexicalIndex):
    """A :class:`LexicalIndex` whose built index keeps its fences in a :class:`_HandOver`."""

    def __init__(self) -> None:
        super().__init__()
        self.fence = _HandOver()

    def _index(self) -> _Built:
        built = super()._index()
        if built.corpora is not self.fence:
            built = self._built = dataclasses.replace(built, corpora=self.fence)
        return built


def _search(index: LexicalIndex, as_of_ts: float) -> list[Row]:
    return index.search("bitcoin", top_k=10, as_of_ts=as_of_ts, where=Filter())


def test_a_fenced_bm25_search_keeps_its_fence_while_another_search_replaces_it() -> None:
    """Search A (as of 1.5: r1 only) finds its fence's index kept from its last call;
    search B (as of 2.5: r1 and r2) replaces it in another thread between A's check of
    the kept index and A's use of it. A must neither return r2 (created after its
    as_of) nor score r1 with B's corpus statistics: its answer is the one it gets alone."""
    alone = LexicalIndex()
    alone.put(ROWS)
    expected = _search(alone, 1.5)
    assert [row[0] for row in expected] == ["r1"]

    index = _RacedIndex()
    index.put(ROWS)
    assert _search(index, 1.5) == expected  # A's fence is built and kept
    other: list[list[Row]] = []

    def search_b() -> None:
        thread = threading.Thread(target=lambda: other.append(_search(index, 2.5)))
        thread.start()
        thread.join(timeout=60)

    index.fence.arm(search_b)
    raced = _search(index, 1.5)
    assert index.fence.race is None, "search A never read its kept index"
    assert [row[0] for row in other[0]] == ["r1", "r2"]  # B ran and kept its own fence
    assert index.fence[None][0] == 2
    assert [row[0] for row in raced] == ["r1"], "a row created after as_of was returned"
    assert raced == expected, "A scored with another fence's corpus statistics"
