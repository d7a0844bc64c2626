"""The YAML layer of the configuration: reading the file (secrets rejected) and feeding it
to pydantic-settings as its lowest-precedence source."""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Any

import yaml
from pydantic.fields import FieldInfo
from pydantic_settings import PydanticBaseSettingsSource

from backend.errors import ConfigError

_SECRET_KEYS = frozenset({"api_key", "secret", "password", "token"})

_YAML_DATA: ContextVar[dict[str, Any]] = ContextVar("_YAML_DATA", default={})  # noqa: B039


class _YamlSource(PydanticBaseSettingsSource):
    """Feeds the already-parsed YAML mapping to pydantic-settings (lowest precedence)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return _YAML_DATA.get().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_YAML_DATA.get())


def _find_secrets(data: Any, prefix: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            dotted = f"{prefix}{key}"
            if str(key).lower() in _SECRET_KEYS and value not in (None, ""):
                found.append(dotted)
            found.extend(_find_secrets(value, f"{dotted}."))
    return found


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.__class__.__name__})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{line} invalid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    secrets = _find_secrets(data)
    if secrets:
        env = ", ".join("SENTINEL_" + s.upper().replace(".", "__") for s in secrets)
        raise ConfigError(
            f"{path}: key {', '.join(secrets)}: secrets come from the environment only ({env})"
        )
    return data
