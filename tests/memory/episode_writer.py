"""Child process of ``test_episodic_cross_process``: one episodic write into a store that
another process writes too (``sentinel paper``'s outcomes, the scheduler's decay).

``python -m tests.memory.episode_writer STORE_SETTINGS_JSON outcome|decay [HOLD_DIR]``:
``outcome`` records an outcome of episode ``ep-1`` of trader ``t1``; with ``HOLD_DIR`` it
stops between its read of the episode's log and its write (it touches ``HOLD_DIR/read``
and waits for ``HOLD_DIR/go``); ``decay`` ages every episode by 150 days (with
``HOLD_DIR`` it touches ``HOLD_DIR/decaying`` just before). Forked by the session's
``forker`` (``CALL tests.memory.episode_writer:main``) with the same arguments.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backend.config import MemorySettings, StoreSettings
from backend.embeddings import HashingEmbedder
from backend.memory.episodic import EpisodicMemory
from backend.memory.models import Outcome
from backend.storage import open_store

TRADER, EPISODE = "t1", "ep-1"


def main(*argv: str) -> None:
    settings, command, *rest = argv or sys.argv[1:]
    hold = Path(rest[0]) if rest else None
    store = open_store(StoreSettings.model_validate_json(settings), HashingEmbedder())
    episodes = EpisodicMemory(store, settings=MemorySettings())
    if hold is not None:
        write = store.upsert

        def held(*args: Any, **kwargs: Any) -> Any:  # the log is read; the write waits
            (hold / "read").touch()
            while not (hold / "go").exists():
                time.sleep(0.02)
            return write(*args, **kwargs)

        store.upsert = held  # type: ignore[method-assign]
    try:
        if command == "outcome":
            at = datetime(2022, 1, 2, tzinfo=UTC)
            outcome = Outcome(horizon="24h", market_return=-0.08, resolved_at=at)
            episodes.record_outcome(TRADER, EPISODE, outcome, as_of=at)
        else:
            at = datetime(2022, 6, 1, tzinfo=UTC)
            if hold is not None:  # the store is open: the decay's read comes next
                (hold / "decaying").touch()
            print(episodes.decay_by_age(TRADER, as_of=at, half_life_days=30))
    finally:
        store.close()


if __name__ == "__main__":
    main()
