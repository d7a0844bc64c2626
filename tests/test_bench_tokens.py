"""scripts/bench_tokens.py: the memory context against the full history at one time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from backend.config import load_settings
from backend.data import load_ohlcv
from backend.embeddings import MiniLMEmbedder
from backend.memory import compute_features, load_news
from backend.text.tokens import count_tokens
from tests.test_bench_retrieval import load_script


def test_one_week_of_history(
    shared_data: Path, minilm: MiniLMEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backend.agents._memory_reader import MemoryReader

    calls: list[dict[str, Any]] = []
    build = MemoryReader.build_context

    def spy(self: MemoryReader, *args: Any) -> Any:
        out = build(self, *args)
        calls.append({"args": args, "episodes": len(out[0].episodes), "account": out[0].account})
        return out

    monkeypatch.setattr(MemoryReader, "build_context", spy)
    bench = load_script("bench_tokens")
    settings = load_settings()
    ohlcv = load_ohlcv(shared_data / "market" / "binance", "BTC/USDT", "1h")
    features = compute_features(ohlcv.frame, symbol="BTC/USDT", timeframe="1h")
    news = load_news(settings.data, shared_data)
    t = datetime(2022, 5, 10, tzinfo=UTC)
    week = timedelta(days=7)
    history_text = bench.load_history_text()
    row = bench.one(
        settings, minilm, ohlcv=ohlcv, features=features, news=news, t=t,
        length=week, history_text=history_text,
    )  # fmt: skip
    opens = ohlcv.frame.index
    in_week = (opens >= pd.Timestamp(t - week)) & (opens < pd.Timestamp(t))
    assert row["bars"] == int(in_week.sum())
    # 168 bars through a 48-bar window consolidated 24 at a time: 5 context episodes, plus
    # the events detected in the week (the LUNA crash)
    assert row["memories"] > 5
    assert 0 < row["memory_context_tokens"] <= settings.memory.token_budget
    assert row["full_history_tokens"] == count_tokens(history_text(ohlcv, start=t - week, end=t))
    assert row["full_history_tokens"] > row["memory_context_tokens"]
    assert row["memory_prompt_tokens"] > row["memory_context_tokens"]
    assert row["full_history_prompt_tokens"] > row["full_history_tokens"]
    # the context at t is the decision loop's: one per bar, the last at t, episodes
    # recalled by the bar's market state over the agent's horizon, with the account
    assert len(calls) == row["bars"]
    symbol, as_of, _query, state, horizon = calls[-1]["args"]
    assert (symbol, as_of, horizon) == ("BTC/USDT", t, "1d") and state
    assert calls[-1]["account"] is not None and calls[-1]["episodes"] > 0
