"""write_run: the files exist, parse, and the HTML report is self-contained."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backend.backtest.engine import BacktestResult, run_backtest
from backend.backtest.models import (
    BarContext,
    Decision,
    DecisionRecord,
    MemoryEffect,
    TradeRecord,
)
from backend.backtest.report import write_run
from backend.config import BacktestSettings
from backend.data import OHLCVFrame, find_ohlcv_file, read_ohlcv_file
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
    assert trades["closes_position"].sum() == result.metrics.n_trades  # positions, not rows
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
    assert "learned in training" not in page  # said of chat-model runs only
    # the heading tells rows from positions (a reviewer's: "Trades (14 of 14)", n_trades 2)
    assert f"of {len(trades)}: {result.metrics.n_trades} positions closed" in page
    # units said (a reviewer's: fees and equity had none, and return_pct -0.0142 read as
    # -0.0142% where trades.csv's fraction is -1.42%)
    quote = result.symbol.split("/")[1]
    assert f"initial equity 10,000.00 {quote}" in page
    assert f'<th class="l">fees_paid</th><td>{result.metrics.fees_paid:,.4f}</td>' in page
    assert f'<td class="l">{quote}</td>' in page and "sqrt(8,766 1h bars a year), rf 0" in page
    assert f"pnl ({quote})" in page and "return (%)" in page
    first = result.trades[0].return_pct * 100
    assert f"<td>{first:,.4f}</td>" in page


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


# ------------------------------------------------ decisions memory changed
HORIZON = 24
START = datetime(2022, 1, 3, tzinfo=UTC)
END = datetime(2022, 1, 10, tzinfo=UTC)


class EffectMaker:
    """Answers the scripted decision (with the memory effect its policy reported) at the
    n-th bar of the run (hold otherwise)."""

    def __init__(self, script: dict[int, tuple[Decision, MemoryEffect | None]]) -> None:
        self.script = script
        self.bars: list[BarContext] = []

    def on_bar(self, bar: BarContext) -> DecisionRecord:
        n = len(self.bars)
        self.bars.append(bar)
        decision, effect = self.script.get(n, (Decision.hold("scripted hold"), None))
        decision = decision.model_copy(update={"memory_effect": effect})
        ids = [f"ep-{n}-a", f"ep-{n}-b"] if effect is not None else []
        decision = decision.model_copy(update={"memory_ids": ids})
        return DecisionRecord(
            as_of=bar.as_of, symbol=bar.symbol, decision=decision, proposed=decision,
            memory_ids=ids,
        )  # fmt: skip

    def on_trade_closed(self, trade: TradeRecord) -> None:
        pass


SCRIPT: dict[int, tuple[Decision, MemoryEffect | None]] = {
    10: (
        Decision(action="hold"),
        MemoryEffect(
            kind="vetoed", without_action="buy", without_size=0.8,
            reasons=["3 similar states: -2.1% after", "persona: no FOMO buys"],
        ),
    ),
    20: (
        Decision(action="buy", size=0.25),
        MemoryEffect(kind="resized", without_action="buy", without_size=1.0, reasons=["losses"]),
    ),
    30: (Decision(action="hold"), None),
    60: (
        Decision(action="sell", size=0.5),
        MemoryEffect(kind="redirected", without_action="buy", without_size=0.5, reasons=["<bad>"]),
    ),
    # less than HORIZON bars before the end: no return yet
    7 * 24 - 5: (
        Decision(action="close"),
        MemoryEffect(kind="vetoed", without_action="sell", without_size=0.3),
    ),
}  # fmt: skip


def test_fills_csv_accounts_for_every_quote_of_the_run(
    tmp_path: Path, run: tuple[BacktestResult, SmaCrossMaker]
) -> None:
    """From fills.csv alone: the fees are the run's, and cash after every fill plus the
    position marked at the last close is the final equity (an open position included)."""
    result, _ = run
    write_run(result, tmp_path / "out", title="fills")
    fills = pd.read_csv(tmp_path / "out" / "fills.csv")
    assert list(fills.columns) == ["time", "side", "amount", "reference_price", "price",
                                   "cost", "fee"]  # fmt: skip
    assert len(fills) >= 2 * result.metrics.n_trades - 1 and (fills["amount"] > 0).all()
    signed = np.where(fills["side"] == "buy", 1.0, -1.0) * fills["amount"]
    assert fills["fee"].sum() == pytest.approx(result.metrics.fees_paid, rel=1e-12)
    assert fills["cost"].to_numpy() == pytest.approx(fills["amount"] * fills["price"])
    slip = BacktestSettings().slippage  # always against the trader
    assert fills["price"].to_numpy() == pytest.approx(
        fills["reference_price"] * (1 + slip * np.sign(signed))
    )
    cash = BacktestSettings().initial_equity - (signed * fills["price"]).sum() - fills["fee"].sum()
    last_close = 100 + 10 * ((299 // 20) % 2) + (299 % 20) * (1 if (299 // 20) % 2 else -1) + 0.5
    held = float(signed.sum())  # the fixture's last candle, (open, open + 0.5)
    assert cash + held * last_close == pytest.approx(float(result.equity.iloc[-1]), rel=1e-9)
    flat = synthetic_ohlcv([(100, 100)] * 3)
    empty = run_backtest(flat, SmaCrossMaker(fast=3, slow=8), settings=BacktestSettings(),
                         trader_id="t", start=None, end=None)  # fmt: skip
    write_run(empty, tmp_path / "none", title="no fills")
    assert (tmp_path / "none" / "fills.csv").read_text().strip() == ",".join(
        ["time", "side", "amount", "reference_price", "price", "cost", "fee"]
    )


@pytest.fixture(scope="module")
def btc(shared_data: Path) -> OHLCVFrame:
    market = shared_data / "market" / "binance"
    return read_ohlcv_file(
        find_ohlcv_file(market, "BTC/USDT", "1h"), pair="BTC/USDT", timeframe="1h"
    )


def _run(
    ohlcv: OHLCVFrame, script: dict[int, tuple[Decision, MemoryEffect | None]]
) -> BacktestResult:
    return run_backtest(
        ohlcv, EffectMaker(script), settings=BacktestSettings(), trader_id="t", start=START, end=END
    )


def test_memory_changes_section_and_csv(tmp_path: Path, btc: OHLCVFrame) -> None:
    result = _run(btc, SCRIPT)
    assert len(result.equity) == 7 * 24
    write_run(result, tmp_path, title="mem", memory=True, outcome_horizon_bars=HORIZON)
    page = (tmp_path / "report.html").read_text()
    assert "<h2>Decisions memory changed</h2>" in page
    assert re.search(r'<th class="l">vetoed</th><td>2</td>', page)
    assert re.search(r'<th class="l">resized</th><td>1</td>', page)
    assert re.search(r'<th class="l">redirected</th><td>1</td>', page)
    assert "4 of 168 decisions" in page and "3 similar states: -2.1% after" in page
    assert "&lt;bad&gt;" in page and "<bad>" not in page
    assert "ep-20-a, ep-20-b" in page and "n/a (run ended)" in page

    # the resized row by hand: bar 20 of the run, close-to-close over the next 24 bars
    first = int(btc.frame.index.searchsorted(pd.Timestamp(START)))
    closes = btc.frame["close"].to_numpy()
    ret = closes[first + 20 + HORIZON] / closes[first + 20] - 1
    diff = (0.25 - 1.0) * ret
    assert f"<td>{ret * 100:+.2f}%</td><td>{diff * 100:+.2f}%</td>" in page
    # the veto at bar 10: held flat (exposure 0) instead of buying 0.8
    ret10 = closes[first + 10 + HORIZON] / closes[first + 10] - 1
    # the redirect at bar 60: -0.5 instead of +0.5
    ret60 = closes[first + 60 + HORIZON] / closes[first + 60] - 1
    assert "1 change less than 24 bars before the run's end" in page

    csv = pd.read_csv(tmp_path / "memory_changes.csv")
    # the headline: each change's exposure difference times the next bar's return only
    bars = [10, 20, 60, 7 * 24 - 5]
    one_bar = [closes[first + b + 1] / closes[first + b] - 1 for b in bars]
    gaps = (csv["target_exposure"] - csv["without_exposure"]).to_numpy()
    assert gaps[:3] == pytest.approx([-0.8, -0.75, -1.0])
    assert csv["bar_difference"].to_numpy() == pytest.approx(gaps * np.array(one_bar))
    total = float(np.dot(gaps, one_bar))
    assert f"memory's changes: {total * 100:+.2f}% of equity over the run" in page
    assert -0.8 * ret10 + diff + (-1.0) * ret60 != pytest.approx(total)  # not the horizon sum
    assert list(csv["kind"]) == ["vetoed", "resized", "redirected", "vetoed"]
    row = csv.iloc[1]
    assert row["time"] == result.equity.index[20].isoformat()
    assert (row["action"], row["size"], row["without_action"], row["without_size"]) == (
        "buy", 0.25, "buy", 1.0,
    )  # fmt: skip
    assert row["next_return"] == pytest.approx(ret) and row["difference"] == pytest.approx(diff)
    assert csv.iloc[0]["target_exposure"] == 0.0 and csv.iloc[0]["without_exposure"] == 0.8
    assert csv.iloc[0]["reasons"] == "3 similar states: -2.1% after | persona: no FOMO buys"
    assert csv.iloc[2]["target_exposure"] == -0.5 and csv.iloc[2]["without_exposure"] == 0.5
    assert (
        pd.isna(csv.iloc[3]["next_return"])
        and csv.iloc[3]["memory_ids"] == f"ep-{7 * 24 - 5}-a ep-{7 * 24 - 5}-b"
    )


def test_memory_changes_are_capped_most_consequential_first(
    tmp_path: Path, btc: OHLCVFrame
) -> None:
    script = {
        n: (
            Decision(action="hold"),
            MemoryEffect(kind="vetoed", without_action="buy", without_size=1.0),
        )
        for n in range(0, 100, 3)
    }
    result = _run(btc, script)
    write_run(result, tmp_path, title="cap", max_memory_changes=5)
    page = (tmp_path / "report.html").read_text()
    assert "Most consequential first (5 of 34)" in page
    assert "29 more changed decisions not listed" in page
    assert "their horizons overlap" in page
    csv = pd.read_csv(tmp_path / "memory_changes.csv")
    assert len(csv) == 34
    biggest = csv.loc[csv["difference"].abs().idxmax(), "time"]
    section = page.split("Most consequential first")[1]
    assert section.index(biggest) < min(
        section.index(t) for t in csv["time"] if t != biggest and t in section
    )


def test_memory_off_or_unchanged_is_one_line(tmp_path: Path, btc: OHLCVFrame) -> None:
    result = _run(btc, {5: (Decision(action="buy", size=0.5), None)})
    write_run(result, tmp_path / "off", title="off", memory=False)
    page = (tmp_path / "off" / "report.html").read_text()
    assert "Memory was off for this run, so memory changed no decision." in page
    assert "memory's changes" not in page
    assert pd.read_csv(tmp_path / "off" / "memory_changes.csv").empty
    write_run(result, tmp_path / "on", title="on", memory=True)
    page = (tmp_path / "on" / "report.html").read_text()
    assert "Memory changed none of the run's 168 decisions." in page


def test_a_change_the_band_executed_alike_is_not_listed(tmp_path: Path, btc: OHLCVFrame) -> None:
    """A reviewer's finding: the "without memory" side was the policy's raw answer, the
    side taken what the no-trade band executed, so a resize both sides would have held
    through was listed (67 of 741 rows of a run; its headline +1.22% for +1.45%). The
    manager now records what the answer without memory would have been executed at."""
    alike = MemoryEffect(kind="resized", without_action="buy", without_size=0.9,
                         without_exposure=0.0)  # fmt: skip
    differs = MemoryEffect(kind="resized", without_action="buy", without_size=0.9,
                           without_exposure=0.6)  # fmt: skip
    result = _run(
        btc, {10: (Decision(action="hold"), alike), 20: (Decision(action="hold"), differs)}
    )
    write_run(result, tmp_path, title="band", memory=True, outcome_horizon_bars=HORIZON)
    csv = pd.read_csv(tmp_path / "memory_changes.csv")
    assert list(csv["time"]) == [result.equity.index[20].isoformat()]
    assert csv.iloc[0]["without_exposure"] == 0.6  # as executed, not the 0.9 proposed
    page = (tmp_path / "report.html").read_text()
    assert "buy 0.90, executed +0.60" in page  # the answer, and what it would have become


def test_a_chat_models_run_does_not_claim_memory_changed_nothing(
    tmp_path: Path, btc: OHLCVFrame
) -> None:
    """Only the rule policy says what it would have done without memory; an LLM run's
    page said "Memory changed none of the run's N decisions" (a reviewer's finding)."""
    asked = Decision(action="hold", model="gemma-3-270m")
    result = _run(btc, {n: (asked, None) for n in range(5)})
    write_run(result, tmp_path, title="llm", memory=True)
    page = (tmp_path / "report.html").read_text()
    assert "A chat model decided this run" in page and "changed none" not in page


def test_what_the_run_went_without_is_said_at_the_top(tmp_path: Path, btc: OHLCVFrame) -> None:
    result = _run(btc, {})
    write_run(result, tmp_path, title="notes", notes=["no headlines file under X: went without"])
    page = (tmp_path / "report.html").read_text()
    assert '<p class="warning">NOTE: no headlines file under X: went without</p>' in page
