"""Typed configuration: ``config/default.yaml`` overridden by ``SENTINEL_*`` environment variables.

One pydantic-settings model, :class:`Settings`, with ``extra="forbid"`` at every level.
Precedence (highest first): keyword arguments, environment (``SENTINEL_STORE__PORT=9000``;
nested keys joined with ``__``), the YAML file, the defaults of the section models.

The section models live in private modules by the area they configure (``_store``,
``_llm``, ``_data``, ``_memory``, ``_agent``, ``_service``; the YAML layer in ``_yaml``);
import them from here, the one public path.

Secrets (API keys) come only from the environment (``SENTINEL_LLM__API_KEY``,
``SENTINEL_EMBEDDING__API_KEY``, ``SENTINEL_EXCHANGE__API_KEY`` / ``__SECRET``); a YAML
file that contains one is rejected. They are
:class:`pydantic.SecretStr`, so they never appear in reprs, logs or error messages.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from backend.config._agent import AgentSettings, BacktestSettings, PaperSettings
from backend.config._data import DataSettings, ExchangeSettings
from backend.config._llm import LLMSettings, LocalLLMSettings
from backend.config._memory import ConversationSettings, DetectorSettings, MemorySettings
from backend.config._service import DEMO_TRADER as DEMO_TRADER
from backend.config._service import JobTrigger, PaperJob, PersonaRefreshJob, SchedulerSettings
from backend.config._store import EmbeddingSettings, StoreSettings
from backend.config._yaml import _YAML_DATA, _read_yaml, _YamlSource, anchor_paths, config_base
from backend.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "AgentSettings",
    "BacktestSettings",
    "ConversationSettings",
    "DataSettings",
    "DetectorSettings",
    "EmbeddingSettings",
    "ExchangeSettings",
    "JobTrigger",
    "LLMSettings",
    "LocalLLMSettings",
    "MemorySettings",
    "PaperJob",
    "PaperSettings",
    "PersonaRefreshJob",
    "SchedulerSettings",
    "Settings",
    "StoreSettings",
    "load_settings",
    "run_directory",
]

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[2] / "config" / "default.yaml"
"""``config/default.yaml`` of the repository (``backend/config/__init__.py`` is two levels
below its root)."""


def run_directory(path: Path) -> Path:
    """``path``, or the run directory whose chroma directory it is (``DIR/khala`` beside
    ``DIR/audit.db``): taken as a store of its own, it got a second audit trail and
    working memory, and a process on ``DIR`` never saw its writes."""
    if path.name == "khala" and (path.parent / "audit.db").is_file():
        return path.parent
    return path


class Settings(BaseSettings):
    """The whole configuration. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="SENTINEL_",
        env_nested_delimiter="__",
        env_parse_none_str="null",  # SENTINEL_EMBEDDING__CACHE_DIR=null is off, as in YAML
        extra="forbid",
        frozen=True,
    )

    store: StoreSettings = StoreSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    llm: LLMSettings = LLMSettings()
    exchange: ExchangeSettings = ExchangeSettings()
    data: DataSettings = DataSettings()
    memory: MemorySettings = MemorySettings()
    backtest: BacktestSettings = BacktestSettings()
    agent: AgentSettings = AgentSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    paper: PaperSettings = PaperSettings()

    @property
    def working_state_file(self) -> Path:
        """Where working memory persists its windows: ``memory.working_state_path``, else
        beside the store (:meth:`StoreSettings.local_file`: for a chroma server, one file
        per machine and server, as its audit trail)."""
        if self.memory.working_state_path is not None:
            return self.memory.working_state_path
        return self.store.local_file("working", "working.sqlite3")

    def offline(self, *, store_dir: Path | None = None) -> Settings:
        """These settings with no chat model (``llm`` unset: persona text by the offline
        rules) on the durable store of the run directory ``store_dir``
        (:meth:`with_store_dir`), or without one on a throwaway store
        (``store.backend=memory``: in process, nothing on disk): what backtests, the
        ablation's reference personas and the LoCoMo evaluation run on."""
        placed = self.with_store_dir(store_dir) if store_dir is not None else self.throwaway()
        return placed.model_copy(update={"llm": LLMSettings()})

    def throwaway(self) -> Settings:
        """These settings on a throwaway store (``store.backend=memory``: in process, no
        file written, working memory included; gone with the process)."""
        return self.model_copy(
            update={"store": self.store.model_copy(update={"backend": "memory"})}
        )

    def with_store_dir(self, root: Path) -> Settings:
        """These settings on the durable store of a run directory ``root`` (what every
        command's ``--store-path DIR`` writes: ``sentinel backtest``, ``replay-trades``,
        ``memory import-chat``, ``mcp``): embedded chroma in ``root/khala``, the audit
        trail in ``root/audit.db``, working memory in ``root/working.sqlite3``. A run
        directory's ``khala`` given as ``root`` is that run directory
        (:func:`run_directory`). A directory of an older release keeps its files where
        they are: the trail ``root/khala/khala_audit.sqlite3`` (an older default store's
        too) and working memory ``root/w.db``, when the new file is not there (every
        command agrees on them: a store has one audit trail)."""
        root = run_directory(root)
        audit, working = root / "audit.db", root / "working.sqlite3"
        legacy_audit, legacy_working = root / "khala" / "khala_audit.sqlite3", root / "w.db"
        if legacy_audit.is_file() and not audit.is_file():
            audit = legacy_audit
        if legacy_working.is_file() and not working.is_file():
            working = legacy_working
        store = self.store.model_copy(
            update={
                "backend": "chroma",
                "mode": "embedded",
                "path": root / "khala",
                "audit_path": audit,
            }
        )
        memory = self.memory.model_copy(update={"working_state_path": working})
        return self.model_copy(update={"store": store, "memory": memory})

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Load :class:`Settings` from ``path`` (default ``config/default.yaml``) and the environment.

    ``overrides`` are top-level sections (e.g. ``store=StoreSettings(...)``) that win over both.
    Raises :class:`ConfigError` naming the dotted key of the first invalid value (never its
    value, which could be a secret), or the file and line of invalid YAML.
    """
    config_path = path if path is not None else DEFAULT_CONFIG_PATH
    stray = _stray_env()
    if stray:
        raise ConfigError(stray)
    anchored = anchor_paths(_read_yaml(config_path), Settings, config_base(config_path))
    token = _YAML_DATA.set(anchored)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_input=False, include_url=False):
            key = ".".join(str(part) for part in err["loc"]) or "<root>"
            problems.append(f"{key}: {err['msg'].removeprefix('Value error, ')}")
        raise ConfigError(
            f"invalid configuration ({config_path} + SENTINEL_* env): " + "; ".join(problems)
        ) from None
    except SettingsError as exc:  # an env value pydantic-settings could not decode
        raise ConfigError(_env_problem(str(exc))) from None
    finally:
        _YAML_DATA.reset(token)


_NOT_SETTINGS = frozenset({"SENTINEL_MCP_TOKEN", "SENTINEL_DATA_DIR"})
"""``SENTINEL_*`` variables that are not settings: the MCP server's bearer token
(``sentinel mcp``) and the test suite's data directory."""


def _stray_env() -> str | None:
    """The one-line error for ``SENTINEL_*`` variables that name no setting (e.g.
    ``SENTINEL_STORE_BACKEND`` for ``SENTINEL_STORE__BACKEND``), or ``None``.
    pydantic-settings ignores a variable whose first part is no section, so such a typo
    would leave the setting at its YAML value without a word, while one a level down is
    refused by ``extra="forbid"``."""
    sections = {name.upper() for name in Settings.model_fields}
    stray = []
    for name in sorted(os.environ):
        upper = name.upper()
        if not upper.startswith("SENTINEL_") or upper in _NOT_SETTINGS:
            continue
        head = upper.removeprefix("SENTINEL_").split("__", 1)[0]
        if head not in sections:
            stray.append(name)
    if not stray:
        return None
    hints = []
    for name in stray:
        head = name.upper().removeprefix("SENTINEL_")
        section = next((s for s in sorted(sections) if head.startswith(s + "_")), None)
        if section is not None:
            hints.append(f"{name} (did you mean SENTINEL_{section}__{head[len(section) + 1 :]}?)")
        else:
            hints.append(name)
    return (
        f"invalid configuration: {', '.join(hints)} names no setting: a setting is "
        f"SENTINEL_<SECTION>__<KEY>, with SECTION one of {', '.join(sorted(sections)).lower()}"
    )


def _env_problem(message: str) -> str:
    """The one-line error for an environment value that does not decode: which
    ``SENTINEL_*`` variables of the section it was (never their values, which could be
    secrets), and how lists and nested values are written."""
    found = re.search(r'field "([^"]+)"', message)
    section = found.group(1) if found else ""
    prefix = f"SENTINEL_{section.upper()}__" if section else "SENTINEL_"
    names = sorted(k for k in os.environ if k.upper().startswith(prefix))
    return (
        f"invalid configuration: {', '.join(names) or prefix + '*'} could not be read as "
        f"setting {section or '?'}: write a list or a nested value as JSON, e.g. "
        """SENTINEL_AGENT__MEMORY_TIERS='["persona","working"]'"""
    )
