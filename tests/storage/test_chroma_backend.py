"""The chroma backend's reopen (an embedded chroma's index after another process's
write), when opening the new client fails."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from chromadb.api import ClientAPI

from backend.config import StoreSettings
from backend.errors import StoreError
from backend.storage._chroma_backend import ChromaBackend
from backend.storage._client import make_chroma_client
from backend.storage._lexical import Filter


def test_a_failed_reopen_is_an_error_and_the_next_read_tries_again(tmp_path: Path) -> None:
    """The path went away for a moment (say): the read that reopens gets a StoreError,
    calls meanwhile get one too (not a closed client's AttributeError), and the next
    read reopens and finds the rows."""
    settings = StoreSettings(path=tmp_path / "khala")
    tries: list[bool] = []

    def flaky() -> ClientAPI:
        tries.append(True)
        if len(tries) == 1:
            raise StoreError("chroma path gone")
        return make_chroma_client(settings)

    backend = ChromaBackend(make_chroma_client(settings), hnsw={}, stemmer=None, reopen=flaky)
    backend.open("ttt", create={"dim": 3})
    vec = np.array([[1.0, 0.0, 0.0]], dtype=np.float32)
    backend.upsert("ttt", ["a"], vec, ["alpha"], [{"created_at_ts": 1.0}])
    backend.validate("ttt", 1)  # the index reflects change 1
    with pytest.raises(StoreError, match="chroma path gone"):
        backend.validate("ttt", 2)  # another process wrote change 2
    with pytest.raises(StoreError, match="could not be reopened"):
        backend.dense("ttt", vec[0], n=1, where=Filter(), as_of_ts=9.0)
    backend.validate("ttt", 2)  # tries again, and opens
    assert [row[0] for row in backend.dense("ttt", vec[0], n=1, where=Filter(), as_of_ts=9.0)] == [
        "a"
    ]
    assert len(tries) == 2
