"""Write one backtest run to a directory: machine-readable files and a self-contained report.

``write_run`` writes into ``out_dir`` (created if needed):

* ``metrics.json`` — :class:`BacktestMetrics` as JSON (its field names; fractions, not
  percent; times ISO-8601 UTC);
* ``trades.csv`` — one row per :class:`TradeRecord` (its field names as the header, which
  is written even without trades);
* ``fills.csv`` — one row per executed order (:data:`FILL_COLUMNS`: ``time`` of the fill,
  the open of the bar after the decision; ``side``; ``amount`` in base units, > 0;
  ``reference_price`` the bar's open and ``price`` after slippage, quote per base;
  ``cost`` = amount x price and ``fee``, quote currency), ccxt's words for a trade: with
  ``trades.csv`` (round trips only) a position still open at the end is accounted for;
* ``decisions.jsonl`` — one :class:`DecisionRecord` JSON object per line (with
  ``memory_ids``, ``prompt_tokens``, ``retrieval_ms``);
* ``equity.csv`` — ``time`` (bar close), ``equity``, ``buy_and_hold``, ``exposure``;
* ``memory_changes.csv`` — one row per decision memory changed (its ``MemoryEffect``), in
  time order, with what happened next over ``outcome_horizon_bars`` bars (columns and
  units: :data:`backend.backtest._memory_changes.COLUMNS`; the header is written even
  without rows);
* ``report.html`` — one offline file: matplotlib figures (Agg) embedded as base64 PNG,
  inline CSS, no script, font, stylesheet or link to anything outside the file: equity vs
  buy-and-hold with the salient ``events`` marked, drawdown and exposure, the persona
  timeline (if given), the metrics table and the first ``max_trades`` trades; when a chat
  model answered less than ``min_llm_share`` of the decisions it was asked for, or the
  memory failed to read or write at any decision, a warning at the top says how many and
  the first error (:func:`~backend.backtest.metrics.run_warning`, the same line the CLI prints);
  and "Decisions memory changed": counts per kind, the total PnL difference memory's
  changes made (fraction of equity, approximate) and the ``max_memory_changes`` most
  consequential ones — or one line saying memory changed nothing (or was off).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from backend.backtest._broker import BrokerFill
from backend.backtest._figures import (
    equity_figure,
    figure_img,
    naive_utc,
    risk_figure,
    timeline_figure,
)
from backend.backtest._memory_changes import memory_changes_frame, memory_changes_section
from backend.backtest.engine import BacktestResult, utc_timestamp
from backend.backtest.metrics import bars_per_year, run_warning
from backend.backtest.models import BacktestMetrics, TradeRecord
from backend.errors import ConfigError, DataError
from backend.files import check_writable, write_files_atomic
from backend.types import base_asset, quote_asset

__all__ = [
    "FILL_COLUMNS",
    "RUN_FILES",
    "check_run_dir",
    "figure_img",
    "naive_utc",
    "write_run",
]

_MAX_TIMELINE_ROWS = 200
_PERCENT_FIELDS = frozenset(
    {
        "total_return",
        "cagr",
        "max_drawdown",
        "win_rate",
        "exposure",
        "buy_and_hold_return",
        "llm_answered_share",
        "buy_and_hold_max_drawdown",
    }
)
_CSS = """
body{font-family:sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ccc}
h3{font-size:14px}
table{border-collapse:collapse;font-size:12px;margin:8px 0}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f0f0f0}td.l,th.l{text-align:left}
img{max-width:100%}.muted{color:#777;font-size:12px}
.warning{background:#fdecea;border:1px solid #d93025;color:#a50e0e;padding:8px 12px}
"""


def write_run(
    result: BacktestResult,
    out_dir: Path,
    *,
    title: str,
    events: list[tuple[datetime, str]] | None = None,
    persona_timeline: pd.DataFrame | None = None,
    max_trades: int = 50,
    min_llm_share: float = 0.95,
    memory: bool | None = None,
    outcome_horizon_bars: int = 24,
    max_memory_changes: int = 50,
    notes: Sequence[str] = (),
) -> None:
    """Write the run's files into ``out_dir`` (see the module doc): first into a
    temporary sibling directory, then each moved in (``os.replace``), so a failure while
    writing leaves ``out_dir`` as it was; :func:`check_run_dir` first.

    ``memory``: whether the agent used memory (None: unknown; False makes the report say
    memory was off); ``outcome_horizon_bars``: bars over which "what happened next" after
    a decision memory changed is measured (``agent.outcome_horizon_bars``); ``notes``:
    what the run went without (a missing news file), shown at the top of the report."""
    target = Path(out_dir)
    check_run_dir(target)
    write_files_atomic(
        target, RUN_FILES, lambda out: _write_files(
            result, out, title=title, events=events, persona_timeline=persona_timeline,
            max_trades=max_trades, min_llm_share=min_llm_share, memory=memory,
            outcome_horizon_bars=outcome_horizon_bars, max_memory_changes=max_memory_changes,
            notes=notes,
        ), what="run's files",
    )  # fmt: skip


RUN_FILES = (
    "metrics.json", "trades.csv", "fills.csv", "decisions.jsonl", "equity.csv",
    "memory_changes.csv", "report.html",
)  # fmt: skip
"""The files :func:`write_run` writes into a run's directory."""


def check_run_dir(out: Path) -> None:
    """Raise :class:`ConfigError` unless ``out`` can take a run's files: not an existing
    file, none of :data:`RUN_FILES` an existing directory in it. Call it before a run,
    so a long run does not end in an error at the write."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: a file is there, not a directory")
    if not out.exists():  # a parent that is a file, or not writable: said now, not at the end
        try:
            check_writable(out / RUN_FILES[0], what="run's files")
        except DataError as err:
            raise ConfigError(f"--out {err}") from None
    for name in RUN_FILES:
        if (out / name).is_dir():
            raise ConfigError(f"--out {out}: {name} is a directory")


def _write_files(
    result: BacktestResult,
    out: Path,
    *,
    title: str,
    events: Sequence[tuple[datetime, str]] | None,
    persona_timeline: pd.DataFrame | None,
    max_trades: int,
    min_llm_share: float,
    memory: bool | None,
    outcome_horizon_bars: int,
    max_memory_changes: int,
    notes: Sequence[str],
) -> None:
    (out / "metrics.json").write_text(result.metrics.model_dump_json(indent=2) + "\n", "utf-8")
    trades_frame(result.trades).to_csv(out / "trades.csv", index=False)
    fills_frame(result.fills).to_csv(out / "fills.csv", index=False)
    with (out / "decisions.jsonl").open("w", encoding="utf-8") as fh:
        for record in result.decisions:
            fh.write(record.model_dump_json() + "\n")
    curve = pd.DataFrame(
        {"equity": result.equity, "buy_and_hold": result.buy_and_hold, "exposure": result.exposure}
    )
    curve.index = pd.Index([t.isoformat() for t in result.equity.index], name="time")
    curve.to_csv(out / "equity.csv")
    changes = memory_changes_frame(result, horizon_bars=outcome_horizon_bars)
    changes.to_csv(out / "memory_changes.csv", index=False)
    page = _render_html(
        result,
        title=title,
        events=sorted(events or [], key=lambda e: utc_timestamp(e[0])),
        persona_timeline=persona_timeline,
        max_trades=max_trades,
        warning=run_warning(result.metrics, min_share=min_llm_share),
        notes=notes,
        memory_section=memory_changes_section(
            changes,
            result,
            memory=memory,
            horizon_bars=outcome_horizon_bars,
            max_rows=max_memory_changes,
        ),
    )
    (out / "report.html").write_text(page, encoding="utf-8")


def trades_frame(trades: Sequence[TradeRecord]) -> pd.DataFrame:
    """Trades as a frame with :class:`TradeRecord`'s fields as columns (times ISO-8601)."""
    rows = [trade.model_dump(mode="json") for trade in trades]
    return pd.DataFrame(rows, columns=list(TradeRecord.model_fields))


FILL_COLUMNS = ("time", "side", "amount", "reference_price", "price", "cost", "fee")
"""The columns of ``fills.csv`` (module doc)."""


def fills_frame(fills: Sequence[BrokerFill]) -> pd.DataFrame:
    """Fills as a frame of :data:`FILL_COLUMNS` (times ISO-8601 UTC; the header is written
    even without fills)."""
    rows = [
        (f.time.isoformat(), "buy" if f.quantity > 0 else "sell", abs(f.quantity),
         f.reference_price, f.price, abs(f.quantity) * f.price, f.fee)
        for f in fills
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=list(FILL_COLUMNS))


# --------------------------------------------------------------------- html
def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


_MONEY_FIELDS = frozenset({"fees_paid", "final_equity"})


def _unit(name: str, quote: str, timeframe: str) -> str:
    """What a metric of ``metrics.json`` is measured in, as the report says it."""
    if name in _PERCENT_FIELDS:
        return "percent (a fraction in metrics.json)"
    if name in _MONEY_FIELDS:
        return quote or "quote currency"
    if name in ("sharpe", "sortino"):
        return f"annualised: sqrt({bars_per_year(timeframe):,.0f} {timeframe} bars a year), rf 0"
    return ""


def _metrics_table(metrics: BacktestMetrics, *, quote: str, timeframe: str) -> str:
    rows = []
    for name, value in metrics.model_dump().items():
        percent = name in _PERCENT_FIELDS and isinstance(value, float)
        shown = f"{value * 100:,.2f}%" if percent else _fmt(value)
        unit = _unit(name, quote, timeframe) if value is not None else ""
        rows.append(
            f'<tr><th class="l">{html.escape(name)}</th><td>{html.escape(shown)}</td>'
            f'<td class="l">{html.escape(unit)}</td></tr>'
        )
    return '<table><tr><th class="l">metric</th><th>value</th><th class="l">unit</th></tr>' + (
        "".join(rows) + "</table>"
    )


def _trades_shown(trades: pd.DataFrame, symbol: str) -> pd.DataFrame:
    """The trade rows as the report shows them: units in the headers (prices, P&L and
    fees in the quote currency, the quantity in the base asset) and ``return_pct``, a
    fraction in ``trades.csv`` (freqtrade's ``profit_ratio``), in percent."""
    quote, base = quote_asset(symbol) or "quote", base_asset(symbol)
    shown = trades.assign(return_pct=trades["return_pct"] * 100)
    return shown.rename(
        columns={
            "entry_price": f"entry_price ({quote})",
            "exit_price": f"exit_price ({quote})",
            "quantity": f"quantity ({base})",
            "pnl": f"pnl ({quote})",
            "return_pct": "return (%)",
            "fees": f"fees ({quote})",
        }
    )


def _table(frame: pd.DataFrame) -> str:
    head = "".join(f'<th class="l">{html.escape(str(c))}</th>' for c in frame.columns)
    body = []
    for row in frame.itertuples(index=False):
        cells = "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row)
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _events_table(events: list[tuple[datetime, str]]) -> str:
    if not events:
        return '<p class="muted">No salient events were given.</p>'
    rows = [(n, when.isoformat(), label) for n, (when, label) in enumerate(events, start=1)]
    frame = pd.DataFrame(rows[:_MAX_TIMELINE_ROWS], columns=["#", "time (UTC)", "event"])
    more = len(rows) - len(frame)
    note = f'<p class="muted">{more} more events not listed.</p>' if more > 0 else ""
    return _table(frame) + note


def _timeline_section(
    frame: pd.DataFrame | None, *, window: tuple[np.datetime64, np.datetime64]
) -> str:
    if frame is None:
        return ""
    shown = frame.reset_index() if isinstance(frame.index, pd.DatetimeIndex) else frame
    note = (
        f'<p class="muted">First {_MAX_TIMELINE_ROWS} of {len(frame)} rows.</p>'
        if len(frame) > _MAX_TIMELINE_ROWS
        else ""
    )
    return (
        "<h2>Persona timeline</h2>"
        + timeline_figure(frame, window=window)
        + _table(shown.head(_MAX_TIMELINE_ROWS))
        + note
    )


def _render_html(
    result: BacktestResult,
    *,
    title: str,
    events: list[tuple[datetime, str]],
    persona_timeline: pd.DataFrame | None,
    max_trades: int,
    warning: str | None = None,
    notes: Sequence[str] = (),
    memory_section: str = "",
) -> str:
    start, end = result.equity.index[0], result.equity.index[-1]
    x = naive_utc(result.equity.index)
    inside = [(t, label) for t, label in events if start <= utc_timestamp(t) <= end]
    trades = trades_frame(result.trades)
    costs = result.settings
    quote = quote_asset(result.symbol) or "(quote currency)"
    summary = (
        f"{html.escape(result.symbol)} {html.escape(result.timeframe)}, trader "
        f"{html.escape(result.trader_id)}; {len(result.equity)} bars with close times "
        f"{html.escape(start.isoformat())} .. {html.escape(end.isoformat())}; initial equity "
        f"{costs.initial_equity:,.2f} {html.escape(quote)}, fee rate {costs.fee_rate:g} and "
        f"slippage {costs.slippage:g} (fractions of notional), min trade fraction "
        f"{costs.min_trade_fraction:g} (of equity). Decisions at bar closes are filled at "
        "the next bar's open."
    )
    if result.metrics.llm_decisions:  # said where the run's numbers are read
        summary += (
            " A chat model proposed the decisions: what it learned in training may include"
            " this window's events, a look-ahead that no fence of the memory prevents (a"
            " rule-policy run of the same window has none)."
        )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="warning">WARNING: {html.escape(warning)}</p>' if warning else "",
        *(f'<p class="warning">NOTE: {html.escape(note)}</p>' for note in notes),
        f"<p>{summary}</p>",
        "<h2>Metrics</h2>",
        _metrics_table(result.metrics, quote=quote, timeframe=result.timeframe),
        "<h2>Equity</h2>",
        equity_figure(result, inside),
        _events_table(inside),
        "<h2>Drawdown and exposure</h2>",
        risk_figure(result),
        _timeline_section(persona_timeline, window=(x[0], x[-1])),
        memory_section,
        f"<h2>Trade rows (first {min(max_trades, len(trades))} of {len(trades)}: "
        f"{result.metrics.n_trades} positions closed, a position reduced in steps is one "
        "row per step)</h2>",
        _table(_trades_shown(trades.head(max_trades), result.symbol))
        if len(trades)
        else '<p class="muted">No trades.</p>',
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
