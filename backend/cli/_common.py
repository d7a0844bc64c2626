"""What every command of the ``sentinel`` CLI shares: the settings of this invocation,
the UTC parser of ``--as-of``-style options and the console.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from backend.config import Settings, load_settings
from backend.errors import ConfigError

__all__ = ["console", "parse_utc", "settings", "state"]

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
