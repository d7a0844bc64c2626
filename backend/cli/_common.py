"""What every command of the ``sentinel`` CLI shares: the settings of this invocation,
the UTC parser of ``--as-of``-style options and the console.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from backend.config import Settings, load_settings
from backend.errors import ConfigError

__all__ = ["console", "parse_utc", "settings", "settings_for_store", "state"]

console = Console()


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
    """Parse ``2024-01-01`` or ISO-8601; naive values are taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--{name}: not an ISO-8601 date/time: {value!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def settings_for_store(store_path: Path | None) -> Settings:
    """The invocation's settings on the durable store at ``store_path`` (None: as
    configured). Two layouts are recognised: a directory a run wrote with ``--store-path``
    (``sentinel backtest``, ``sentinel paper``: chroma in ``DIR/khala``, the audit trail
    in ``DIR/audit.db``, working memory in ``DIR/working.sqlite3``), else ``DIR`` itself as
    ``store.path`` (the default layout of ``.sentinel/khala``)."""
    cfg = settings()
    if store_path is None:
        return cfg
    if (store_path / "khala").is_dir() and (store_path / "audit.db").is_file():
        store = cfg.store.model_copy(
            update={
                "backend": "chroma",
                "path": store_path / "khala",
                "audit_path": store_path / "audit.db",
            }
        )
        memory = cfg.memory.model_copy(
            update={"working_state_path": store_path / "working.sqlite3"}
        )
        return cfg.model_copy(update={"store": store, "memory": memory})
    store = cfg.store.model_copy(update={"backend": "chroma", "path": store_path})
    return cfg.model_copy(update={"store": store})
