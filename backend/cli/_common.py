"""What every command of the ``sentinel`` CLI shares: the settings of this invocation,
the parsers of ``--as-of``-style and ``--pair`` options, the store and data-root
layouts (``--store-path``, the news and Fear & Greed files beside the candles) and the
console.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from backend import types
from backend.config import Settings, load_settings, run_directory
from backend.errors import ConfigError
from backend.files import write_text_atomic
from backend.types import normalize_pair

__all__ = [
    "DEPENDENCY_FAILED",
    "check_data_root",
    "console",
    "data_root_for",
    "news_inputs",
    "news_warnings",
    "parse_pair",
    "parse_utc",
    "settings",
    "settings_for_store",
    "split_values",
    "state",
    "store_settings",
    "write_json",
]

console = Console(soft_wrap=True)
"""stdout of the commands: a line is never wrapped (off a terminal rich wraps at 80
columns, and a reviewer's grep of a path cut in two found nothing); tables still fit
the width."""

DEPENDENCY_FAILED = 3
"""Exit status of a command that finished and wrote every output, but whose LLM or store
failed at too many of its calls (:func:`backend.backtest.metrics.dependency_failure`):
a script that runs it must not read its figures as a measurement. 2 is bad input or a
failed command, 1 a bug, 130 an interrupt."""
_log = logging.getLogger("backend.cli")


class _State:
    settings: Settings | None = None
    config_path: Path | None = None


state = _State()


def settings() -> Settings:
    """Settings loaded once per invocation (``--config`` or ``config/default.yaml`` + env)."""
    if state.settings is None:
        state.settings = load_settings(state.config_path)
    return state.settings


def parse_utc(value: str, *, name: str) -> datetime:
    """Parse ``2024-01-01`` or ISO-8601, naive taken as UTC (:func:`backend.types.parse_utc`);
    raises :class:`ConfigError` naming ``--name``."""
    try:
        return types.parse_utc(value)
    except ValueError as exc:
        raise ConfigError(f"--{name}: {exc}") from None


def parse_trader(value: str) -> str:
    """A ``--trader`` id as the store takes it (``TRADER_ID_PATTERN``: ``0x513b...``,
    ``market-btc``); raises :class:`ConfigError` for any other text."""
    from backend.storage.models import TRADER_ID_PATTERN

    if not re.fullmatch(TRADER_ID_PATTERN, value):
        raise ConfigError(f"--trader: not a valid trader id: {value[:40]!r}")
    return value


def parse_pair(value: str, *, name: str = "pair") -> str:
    """The ccxt symbol of a pair as typed (``btc/usdt``, ``BTC_USDT``, ``BTC-USDT``,
    ``BTCUSDT`` -> ``BTC/USDT``: :func:`backend.types.normalize_pair`), so files, ids,
    constraints and reports all see one spelling. Raises :class:`ConfigError` naming
    ``--name`` for text that is not a pair."""
    try:
        return normalize_pair(value)
    except ValueError as exc:
        raise ConfigError(f"--{name}: {exc}") from None


def data_root_for(data_dir: Path, settings: Settings) -> Path:
    """The shared data root the maker reads news and Fear & Greed from (``news/``,
    ``trades/``): ``data_dir`` itself if it has one of those, its grandparent for the
    ``ROOT/market/EXCHANGE`` candle layout, else ``settings.data.data_dir``."""
    for candidate in (data_dir, data_dir.parent.parent):
        if (candidate / "news").is_dir() or (candidate / "trades").is_dir():
            return candidate
    return settings.data.data_dir


def check_data_root(data_root: Path | None) -> None:
    """Refuse a ``--data-root`` given that is not a directory (ConfigError): a run would
    otherwise go on without news or sentiment on the strength of a typo."""
    if data_root is not None and not data_root.is_dir():
        raise ConfigError(f"--data-root {data_root}: not a directory")


def news_inputs(data_root: Path, settings: Settings) -> dict[str, str | None]:
    """The headline and Fear & Greed files a run reads from ``data_root``
    (``data.headlines_path``/``data.fear_greed_path`` under it): ``{"headlines",
    "fear_greed"}``, each the path or None when the file is missing. A missing one is
    said on stderr (a warning): the run goes on without news shocks or sentiment, which
    changes its decisions, so it must not pass unnoticed."""
    paths = settings.data.model_copy(update={"data_dir": data_root})
    found: dict[str, str | None] = {}
    for name, path in (("headlines", paths.headlines_path), ("fear_greed", paths.fear_greed_path)):
        found[name] = str(path) if path.is_file() else None
        if found[name] is None:
            _log.warning("no %s file at %s: the run goes on without it", name, path)
    return found


def news_warnings(found: dict[str, str | None], data_root: Path) -> list[str]:
    """One line per input :func:`news_inputs` did not find, for a run's report and JSON
    (a stderr line alone went unseen: a reviewer's run without them had no news shock
    among its memory's changes, and its ablation page said nothing)."""
    what = {"headlines": "headlines (news shocks)", "fear_greed": "Fear & Greed index"}
    return [
        f"no {what.get(name, name)} file under {data_root}: the run went without it"
        for name, path in found.items()
        if path is None
    ]


def settings_for_store(store_path: Path | None, *, create: bool = True) -> Settings:
    """The invocation's settings on the durable store at ``store_path`` (None: as
    configured); :func:`store_settings` of the invocation's settings. A reader
    (``create=False``) of the configured embedded store gets a :class:`ConfigError` when
    there is none (no ``chroma.sqlite3`` under ``store.path``) instead of an empty store
    made in the working directory and searched. Without ``store_path``, the ``memory``
    backend (in process, nothing kept) is a :class:`ConfigError`: an import into it had
    said "recorded 20 messages" and kept none, and a read of it finds nothing."""
    cfg = settings()
    if store_path is not None:
        return store_settings(cfg, store_path, create=create)
    store = cfg.store
    if store.backend == "memory":
        raise ConfigError(
            "store.backend is memory (in process: nothing is kept after the command); "
            "give --store-path DIR or set store.backend to chroma"
        )
    embedded = store.backend == "chroma" and store.mode == "embedded"
    if not create and embedded and not (store.path / "chroma.sqlite3").is_file():
        raise ConfigError(f"no memory store at {store.path} (store.path); give --store-path")
    return cfg


def store_settings(cfg: Settings, store_path: Path, *, create: bool = True) -> Settings:
    """``cfg`` on the durable store at ``store_path``. Two layouts are recognised: a run
    directory (``DIR/khala``, what every command's ``--store-path`` writes:
    :meth:`~backend.config.Settings.with_store_dir`; a directory of an older release's
    ``replay-trades`` keeps its audit trail and working memory where they are; its
    ``DIR/khala`` given instead of ``DIR`` is ``DIR``), and a bare chroma directory
    (``DIR/chroma.sqlite3``, or ``store.path`` itself: the default ``.sentinel/khala``)
    used as ``store.path``. A directory with neither is a new run
    directory when ``create``, else a :class:`ConfigError` (a reader never makes an empty
    store it would then answer from)."""
    if store_path.exists() and not store_path.is_dir():
        raise ConfigError(f"--store-path {store_path}: not a directory")
    khala = store_path / "khala"
    if run_directory(store_path) != store_path:
        return store_settings(cfg, run_directory(store_path), create=create)
    bare = (store_path / "chroma.sqlite3").is_file() or (
        store_path.resolve() == cfg.store.path.resolve() and not khala.is_dir()
    )
    if khala.is_dir() or (create and not bare):
        return cfg.with_store_dir(store_path)  # an older release's files are kept there
    if not bare or not (create or (store_path / "chroma.sqlite3").is_file()):
        raise ConfigError(f"--store-path {store_path}: no memory store there")
    store = cfg.store.model_copy(update={"backend": "chroma", "path": store_path})
    return cfg.model_copy(update={"store": store})


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON to ``path`` atomically (parents created;
    :func:`backend.files.write_atomic`). Raises :class:`DataError` naming the file."""
    write_text_atomic(path, json.dumps(payload, indent=1), what="JSON file")


def split_values(text: str, *, name: str) -> list[str]:
    """The comma-separated values of option ``--name`` (blanks dropped); ConfigError
    naming the option when there is none."""
    items = [part.strip() for part in text.split(",") if part.strip()]
    if not items:
        raise ConfigError(f"--{name}: give at least one value (comma-separated)")
    return items
