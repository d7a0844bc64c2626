"""write_run: the files exist, parse, and the HTML report is self-contained."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from backend.backtest.engine import BacktestResult, run_backtest
from backend.backtest.models import DecisionRecord
from backend.backtest.report import write_run
from backend.config import BacktestSettings
from tests.backtest._makers import T0, SmaCrossMaker, synthetic_ohlcv

CONTRACT_KEYS = {
    "total_return",
    "sharpe",
    "max_drawdown",
    "n_trades",
    "n_decisions",
    "buy_and_hold_return",
}


@pytest.fixture(scope="module")
def run() -> tuple[BacktestResult, SmaCrossMaker]:
    prices = [
        100 + 10 * ((i // 20) % 2) + (i % 20) * (1 if (i // 20) % 2 else -1) for i in range(300)
    ]
    ohlcv = synthetic_ohlcv([(p, p + 0.5) for p in prices])
    maker = SmaCrossMaker(fast=3, slow=8)
    result = run_backtest(
        ohlcv, maker, settings=BacktestSettings(), trader_id="t", start=None, end=None
    )
    assert result.metrics.n_trades > 5
    return result, maker


def test_files_are_written_and_parse(
    tmp_path: Path, run: tuple[BacktestResult, SmaCrossMaker]
) -> None:
    result, maker = run
    events = [*maker.salient_events(), (T0 - pd.Timedelta(days=30), "before the window")]
    write_run(
        result,
        tmp_path / "out",
        title="Test <run> & co",
        events=events,
        persona_timeline=maker.persona_timeline(),
    )
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= CONTRACT_KEYS
    assert metrics == json.loads(result.metrics.model_dump_json())
    assert -1 <= metrics["max_drawdown"] <= 0 and abs(metrics["total_return"]) < 5

    trades = pd.read_csv(out / "trades.csv")
    assert len(trades) == result.metrics.n_trades
    assert list(trades.columns)[:4] == ["symbol", "side", "entry_time", "exit_time"]
    assert trades["pnl"].sum() == pytest.approx(sum(t.pnl for t in result.trades))

    lines = (out / "decisions.jsonl").read_text().splitlines()
    assert len(lines) == metrics["n_decisions"]
    parsed = [DecisionRecord.model_validate_json(line) for line in lines]
    assert parsed == list(result.decisions)
    first = json.loads(lines[-1])
    assert {"memory_ids", "prompt_tokens", "retrieval_ms", "violations"} <= set(first)
    assert first["memory_ids"] and first["prompt_tokens"] >= 100

    equity = pd.read_csv(out / "equity.csv")
    assert len(equity) == len(result.equity)

    page = (out / "report.html").read_text()
    assert page.count('<img alt="figure" src="data:image/png;base64,') == 3  # + persona plot
    assert "http" not in page.lower()
    assert not re.search(r"<(script|link|iframe)\b", page) and "@import" not in page
    assert "Test &lt;run&gt; &amp; co" in page
    assert "big move" in page and "before the window" not in page
    assert "risk_appetite" in page and "Persona timeline" in page


def test_without_trades_events_or_persona(tmp_path: Path) -> None:
    from tests.backtest._makers import ScriptedMaker

    ohlcv = synthetic_ohlcv([(100, 100)] * 5)
    result = run_backtest(
        ohlcv, ScriptedMaker({}), settings=BacktestSettings(), trader_id="t", start=None, end=None
    )
    write_run(result, tmp_path, title="empty")
    assert pd.read_csv(tmp_path / "trades.csv").empty
    page = (tmp_path / "report.html").read_text()
    assert "No trades." in page and page.count("data:image/png;base64,") == 2
    assert "Persona timeline" not in page and "No salient events" in page


def test_event_log_persona_timeline(tmp_path: Path) -> None:
    from tests.backtest._makers import ScriptedMaker

    ohlcv = synthetic_ohlcv([(100, 100)] * 24)
    result = run_backtest(
        ohlcv, ScriptedMaker({}), settings=BacktestSettings(), trader_id="t", start=None, end=None
    )
    log = pd.DataFrame(
        {
            "as_of": [T0, T0 + pd.Timedelta(hours=5), T0 + pd.Timedelta(hours=9)],
            "version": [1, 2, 2],
            "attribute": ["constraints", "risk_appetite", "constraints"],
            "action": ["ADD", "UPDATE", "ADD"],
            "new_value": [{"kind": "max_leverage", "value": 3.0}, 0.4, None],
        }
    )
    write_run(result, tmp_path, title="log", persona_timeline=log)
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    assert "risk_appetite" in page and "max_leverage" in page
