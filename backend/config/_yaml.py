"""The YAML layer of the configuration: reading the file (secrets rejected), anchoring its
relative paths, and feeding it to pydantic-settings as its lowest-precedence source.

A relative path in a config file is relative to the file's **base**: the directory the
file is in, or that directory's parent when it is named ``config`` (the repository's
layout: ``config/default.yaml``'s ``.sentinel/khala`` and ``../shared/data`` are the
repository's). Before, they were relative to the working directory, so a command run
from elsewhere made a second, empty store there and never saw the first. Paths under
``data.data_dir`` (``data.market``, ``data.fills``, ...) stay relative to it; a relative
path in a ``SENTINEL_*`` variable or a command's option is the shell's (the working
directory), as usual.
"""

from __future__ import annotations

import typing
from contextvars import ContextVar
from os.path import normpath
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_settings import PydanticBaseSettingsSource

from backend.config._section import is_path
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


_UNDER_DATA_DIR = frozenset({"market", "fills", "headlines", "fear_greed"})
"""``data.*`` paths that are relative to ``data.data_dir``, not to the file."""

_SQLITE = "sqlite:///"


def config_base(path: Path) -> Path:
    """The directory a config file's relative paths are relative to (module doc)."""
    folder = path.resolve().parent
    return folder.parent if folder.name == "config" else folder


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (``Section``, ``Section | None``, ``list[Section]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        inner = _model_of(arg)
        if inner is not None:
            return inner
    return None


def anchor_paths(data: Any, model: type[BaseModel], base: Path, *, section: str = "") -> Any:
    """``data`` (a YAML mapping for ``model``, or a list of them) with every relative path
    setting made absolute under ``base`` (module doc), and a relative SQLite URL's file
    too (``scheduler.jobstore_url``). Anything else is left as it is, for the model to
    validate."""
    if isinstance(data, list):
        return [anchor_paths(item, model, base, section=section) for item in data]
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for key, value in data.items():
        field = model.model_fields.get(str(key))
        if field is None:
            continue
        if is_path(field.annotation):
            under_data = section == "data" and key in _UNDER_DATA_DIR
            if isinstance(value, str) and value.strip() and not under_data:
                expanded = Path(value).expanduser()
                out[key] = str(expanded) if expanded.is_absolute() else normpath(base / expanded)
        elif key == "jobstore_url" and isinstance(value, str) and value.startswith(_SQLITE):
            file = value.removeprefix(_SQLITE)
            if file and not file.startswith(("/", ":memory:")):
                out[key] = _SQLITE + normpath(base / file)
        else:
            inner = _model_of(field.annotation)
            if inner is not None:
                out[key] = anchor_paths(value, inner, base, section=str(key))
    return out


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
