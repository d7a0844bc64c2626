from __future__ import annotations

from pathlib import Path

import pytest

from backend.config import DEFAULT_CONFIG_PATH, load_settings
from backend.errors import ConfigError


def test_default_yaml_loads_with_the_embedded_defaults() -> None:
    settings = load_settings()
    assert settings.store.mode == "embedded"
    assert settings.embedding.provider == "minilm"
    assert settings.store.resolved_audit_path == settings.store.path / "khala_audit.sqlite3"
    assert DEFAULT_CONFIG_PATH.name == "default.yaml"


def test_environment_overrides_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTINEL_STORE__MODE", "server")
    monkeypatch.setenv("SENTINEL_STORE__PORT", "9123")
    settings = load_settings()
    assert (settings.store.mode, settings.store.port) == ("server", 9123)
    assert settings.store.host == "127.0.0.1"  # the rest still from YAML


def test_bad_values_name_the_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SENTINEL_STORE__PORT", "not-a-port")
    with pytest.raises(ConfigError, match=r"store\.port"):
        load_settings()
    monkeypatch.delenv("SENTINEL_STORE__PORT")
    for value in ("inf", "1e400", "nan"):  # inf passed "> 0" and ended a run as an internal error
        monkeypatch.setenv("SENTINEL_BACKTEST__INITIAL_EQUITY", value)
        with pytest.raises(ConfigError, match=r"backtest\.initial_equity: .*finite"):
            load_settings()
    monkeypatch.delenv("SENTINEL_BACKTEST__INITIAL_EQUITY")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("store:\n  mode: cloud\n")
    with pytest.raises(ConfigError, match=r"store\.mode"):
        load_settings(cfg)
    cfg.write_text("store:\n  colour: blue\n")
    with pytest.raises(ConfigError, match=r"store\.colour: Extra inputs are not permitted"):
        load_settings(cfg)
    cfg.write_text("store: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_settings(cfg)
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.yaml")
    # a base URL with no scheme had run on, every call "cannot connect ... at ://"
    monkeypatch.setenv("SENTINEL_LLM__BASE_URL", "127.0.0.1:8080/v1")
    with pytest.raises(ConfigError, match=r"llm\.base_url: .*must start with http://"):
        load_settings()
    monkeypatch.setenv("SENTINEL_LLM__BASE_URL", "HTTPS://api.example.com/v1")
    assert load_settings().llm.base_url == "HTTPS://api.example.com/v1"
    monkeypatch.setenv("SENTINEL_LLM__BASE_URL", "")  # empty: no LLM, as before
    assert load_settings().llm.base_url is None


def test_a_top_level_typo_in_the_environment_is_refused_not_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SENTINEL_STORE_BACKEND", "memory")  # one underscore: no setting
    with pytest.raises(
        ConfigError, match=r"SENTINEL_STORE_BACKEND \(did you mean SENTINEL_STORE__BACKEND\?\)"
    ):
        load_settings()
    monkeypatch.delenv("SENTINEL_STORE_BACKEND")
    monkeypatch.setenv("SENTINEL_STOR__BACKEND", "memory")
    with pytest.raises(ConfigError, match="SENTINEL_STOR__BACKEND names no setting"):
        load_settings()
    monkeypatch.delenv("SENTINEL_STOR__BACKEND")
    monkeypatch.setenv("SENTINEL_STORE__PATH", "")  # was the working directory as the store
    with pytest.raises(ConfigError, match=r"store\.path: an empty path would be the working"):
        load_settings()
    monkeypatch.delenv("SENTINEL_STORE__PATH")
    monkeypatch.setenv("SENTINEL_MCP_TOKEN", "t")  # not a setting, read by `sentinel mcp`
    monkeypatch.setenv("SENTINEL_STORE__BACKEND", "memory")
    assert load_settings().store.backend == "memory"


def test_a_list_from_the_environment_that_is_not_json_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pydantic-settings decodes a list or nested env value as JSON and raises its own
    error otherwise: a ConfigError naming the variable (not its value), no crash."""
    monkeypatch.setenv("SENTINEL_AGENT__MEMORY_TIERS", "persona")
    with pytest.raises(ConfigError, match="SENTINEL_AGENT__MEMORY_TIERS could not be read") as e:
        load_settings()
    assert "as JSON" in str(e.value)
    monkeypatch.setenv("SENTINEL_AGENT__MEMORY_TIERS", '["persona"]')
    assert list(load_settings().agent.memory_tiers) == ["persona"]


def test_null_in_the_environment_is_none_as_in_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    """``SENTINEL_EMBEDDING__CACHE_DIR=null`` turns the cache off, as ``null`` in YAML
    does; it had been read as a directory named ``null`` (a cache written there)."""
    monkeypatch.setenv("SENTINEL_EMBEDDING__CACHE_DIR", "null")
    monkeypatch.setenv("SENTINEL_LLM__BASE_URL", "null")
    settings = load_settings()
    assert settings.embedding.cache_dir is None and settings.llm.base_url is None


def test_secrets_only_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = "sk-live-SECRET-value-42"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"llm:\n  api_key: {secret}\n")
    with pytest.raises(ConfigError, match="SENTINEL_LLM__API_KEY") as err:
        load_settings(cfg)
    assert secret not in str(err.value)
    monkeypatch.setenv("SENTINEL_LLM__API_KEY", secret)
    monkeypatch.setenv("SENTINEL_LLM__TIMEOUT_S", "-1")
    with pytest.raises(ConfigError, match=r"llm\.timeout_s") as err:
        load_settings()
    assert secret not in str(err.value)
    monkeypatch.delenv("SENTINEL_LLM__TIMEOUT_S")
    settings = load_settings()
    assert settings.llm.api_key is not None
    assert settings.llm.api_key.get_secret_value() == secret
    assert secret not in repr(settings) and secret not in str(settings.model_dump())


def test_data_files_come_from_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every data file is named by ``data`` (relative to ``data.data_dir`` or absolute)."""
    default = load_settings().data
    shared = DEFAULT_CONFIG_PATH.parents[2] / "shared" / "data"  # beside the repository
    assert default.market_dir == shared / "market" / "binance"
    assert default.fills_path == shared / "trades" / "hyperliquid_fills.csv"
    monkeypatch.setenv("SENTINEL_DATA__MARKET", "market/kraken")
    monkeypatch.setenv("SENTINEL_DATA__HEADLINES", str(tmp_path / "news.csv"))
    data = load_settings().data
    assert data.market_dir == shared / "market" / "kraken"
    assert data.headlines_path == tmp_path / "news.csv"  # absolute: as given
    assert data.model_copy(update={"data_dir": tmp_path}).fear_greed_path == (
        tmp_path / "trades" / "fear_greed_index.csv"
    )


def test_a_config_files_relative_paths_are_its_own_not_the_working_directorys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reviewer's: run from another directory, a command made a second, empty store
    there (``.sentinel/khala`` of the working directory) and never saw the first, and
    ``../shared/data`` named no data. A config file's relative paths are relative to its
    directory, or that directory's parent when it is named ``config``; an environment
    variable's are the shell's."""
    monkeypatch.chdir(tmp_path)
    repo = DEFAULT_CONFIG_PATH.parents[1]
    default = load_settings()
    assert default.store.path == repo / ".sentinel" / "khala"
    assert default.llm.local.model_path.parent == repo / ".sentinel" / "models"
    assert default.scheduler.jobstore_url == f"sqlite:///{repo}/.sentinel/scheduler.sqlite3"
    own = tmp_path / "deploy" / "sentinel.yaml"
    own.parent.mkdir()
    own.write_text("store:\n  path: khala\ndata:\n  data_dir: ../data\n  market: ohlcv\n")
    mine = load_settings(own)
    assert mine.store.path == own.parent / "khala"
    assert mine.data.market_dir == tmp_path / "data" / "ohlcv"  # under data_dir, as before
    monkeypatch.setenv("SENTINEL_STORE__PATH", "here/khala")
    assert load_settings(own).store.path == Path("here/khala")  # the shell's


def test_a_chroma_servers_audit_trail_is_one_per_machine_whatever_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under ``store.path`` (relative by default) two processes of one chroma server
    started in two directories kept two trails, and neither's caches saw the other's
    writes. A server's default trail is one file per machine, server and prefix."""
    from backend.config import StoreSettings

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    seen = []
    for where in ("a", "b"):
        monkeypatch.chdir(tmp_path / where)
        seen.append(StoreSettings(mode="server", port=9123).resolved_audit_path.resolve())
    assert (
        seen[0] == seen[1] == Path.home() / ".sentinel" / "audit" / "127.0.0.1-9123-khala.sqlite3"
    )
    # working memory too: paper in one directory and the MCP server in another
    served = load_settings().model_copy(update={"store": StoreSettings(mode="server", port=9123)})
    assert served.working_state_file == (
        Path.home() / ".sentinel" / "working" / "127.0.0.1-9123-khala.sqlite3"
    )
    # an older release's trail under one process's store.path is not taken: that would
    # split the processes again, by working directory
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "khala_audit.sqlite3").touch()
    old = StoreSettings(mode="server", port=9123, path=tmp_path / "old")
    assert old.resolved_audit_path == seen[0]
    embedded = StoreSettings(path=Path("x"))
    assert embedded.resolved_audit_path == Path("x") / "khala_audit.sqlite3"
    assert StoreSettings(mode="server", audit_path=tmp_path / "t.db").resolved_audit_path == (
        tmp_path / "t.db"
    )


def test_a_store_is_named_where_it_is() -> None:
    """A reviewer's: ``sentinel mcp`` on a chroma server named the embedded path it does
    not use when the trader was unknown. Messages name the store by ``location``."""
    from backend.config import StoreSettings

    assert StoreSettings(path=Path("/s/khala")).location == "chroma path /s/khala"
    served = StoreSettings(mode="server", host="10.0.0.5", port=8001)
    assert served.location == "chroma server 10.0.0.5:8001"
    assert StoreSettings(backend="memory").location == "the in-process memory backend"
