"""Fixtures of the service tests: a config file per test (everything under tmp_path), the
loopback Binance server with the real BTC/USDT 1h candles, and clean runtimes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from backend.service.runtime import close_runtimes

ConfigFactory = Callable[..., Path]


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture
def make_config(tmp_path: Path, shared_data: Path) -> ConfigFactory:
    """Write a YAML config whose state (store, working memory, job store, service state)
    lives under ``tmp_path/<name>``; ``extra`` sections are merged in. Returns its path."""

    def factory(name: str = "svc", **extra: Any) -> Path:
        root = tmp_path / name
        root.mkdir(parents=True, exist_ok=True)
        data: dict[str, Any] = {
            "store": {"path": str(root / "khala")},
            "embedding": {"provider": "hashing"},
            "data": {"data_dir": str(shared_data)},
            "scheduler": {
                "jobstore_url": f"sqlite:///{root / 'jobs.sqlite3'}",
                "state_path": str(root / "service.sqlite3"),
            },
        }
        path = root / "config.yaml"
        path.write_text(yaml.safe_dump(_merge(data, extra)), encoding="utf-8")
        return path

    return factory


@pytest.fixture(autouse=True)
def _close_runtimes() -> Iterator[None]:
    yield
    close_runtimes()
