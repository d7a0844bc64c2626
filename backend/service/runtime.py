"""What the jobs of one process share: the composition root of the scheduler service.

Job functions take plain arguments (a config path, ids) so apscheduler can store them;
each call resolves its :class:`Runtime` by config path here. A runtime builds, once and
lazily, the memory system (``backend.compose.build_memory_system``: one chroma client,
one working-memory state file per process), the jobs' SQLite state, ccxt exchanges and
paper traders, and holds the lock every job takes, so jobs of one process never touch the
memory at the same time. :func:`close_runtimes` closes them all (scheduler shutdown).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Literal

import ccxt

from backend.compose import MemorySystem, build_exchange, build_memory_system
from backend.config import DEFAULT_CONFIG_PATH, Settings, load_settings
from backend.service._db import ServiceDB
from backend.service.paper import PaperTrader

__all__ = ["Runtime", "close_runtimes", "config_key", "runtime_for"]


def config_key(config: str | Path | None) -> str:
    """The absolute path of a config file as the jobs' argument (default config when
    None or empty)."""
    return str(Path(config).resolve()) if config else str(DEFAULT_CONFIG_PATH)


class Runtime:
    """The shared parts of one configuration in this process (module doc)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lock = threading.RLock()
        self._system: MemorySystem | None = None
        self._db: ServiceDB | None = None
        self._exchanges: dict[tuple[str, str | None], ccxt.Exchange] = {}
        self._papers: dict[tuple[str, ...], PaperTrader] = {}

    def system(self) -> MemorySystem:
        """The memory system of ``settings`` (built on first use)."""
        with self.lock:
            if self._system is None:
                self._system = build_memory_system(self.settings)
            return self._system

    def db(self) -> ServiceDB:
        """The jobs' state file ``scheduler.state_path``."""
        with self.lock:
            if self._db is None:
                self._db = ServiceDB(self.settings.scheduler.state_path)
            return self._db

    def exchange(
        self, exchange_id: str | None = None, *, api_url: str | None = None
    ) -> ccxt.Exchange:
        """A ccxt exchange (default ``exchange.id``; ``api_url`` or ``exchange.api_base_url``
        redirects its API), with the credentials of the environment when set."""
        cfg = self.settings.exchange
        key = (exchange_id or cfg.id, api_url or cfg.api_base_url)
        with self.lock:
            if key not in self._exchanges:
                self._exchanges[key] = build_exchange(self.settings, key[0], api_url=key[1])
            return self._exchanges[key]

    def paper(
        self,
        exchange_id: str | None,
        pair: str,
        timeframe: str,
        *,
        clock: Literal["live", "replay"],
        api_url: str | None = None,
    ) -> PaperTrader:
        """The paper trader of one run (built on first use, then reused)."""
        ex_id = exchange_id or self.settings.exchange.id
        key = (ex_id, pair, timeframe, clock, api_url or "")
        with self.lock:
            if key not in self._papers:
                data_root = self.settings.data.data_dir
                self._papers[key] = PaperTrader(
                    self.settings,
                    exchange=self.exchange(ex_id, api_url=api_url),
                    exchange_id=ex_id,
                    pair=pair,
                    timeframe=timeframe,
                    db=self.db(),
                    system=self.system() if self.settings.agent.memory else None,
                    clock=clock,
                    data_root=data_root if data_root.is_dir() else None,
                )
            return self._papers[key]

    def close(self) -> None:
        """Close the memory system and the state file (idempotent)."""
        with self.lock:
            if self._system is not None:
                self._system.close()
                self._system = None
            if self._db is not None:
                self._db.close()
                self._db = None
            self._papers.clear()
            self._exchanges.clear()


_RUNTIMES: dict[str, Runtime] = {}
_GUARD = threading.Lock()


def runtime_for(config: str | None) -> Runtime:
    """The runtime of a config file (loaded with :func:`load_settings` on first use)."""
    key = config_key(config)
    with _GUARD:
        found = _RUNTIMES.get(key)
        if found is None:
            found = _RUNTIMES[key] = Runtime(load_settings(Path(key)))
        return found


def close_runtimes() -> None:
    """Close and forget every runtime of this process."""
    with _GUARD:
        runtimes = list(_RUNTIMES.values())
        _RUNTIMES.clear()
    for rt in runtimes:
        rt.close()
