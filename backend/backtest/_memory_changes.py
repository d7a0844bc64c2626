"""The decisions memory changed, for the run report (``report.html``, ``memory_changes.csv``).

A decision is "changed by memory" when its policy answer (``DecisionRecord.proposed``)
carries a :class:`~backend.backtest.models.MemoryEffect` (what the same policy would have
done at that bar without reading memory) and the two would have been executed at
different exposures. For each such decision, at bar ``i``:

* ``target_exposure``: what the executed decision (after the constraint check and the
  no-trade band) asked for, ``without_exposure``: what the without-memory answer would
  have been executed at (``MemoryEffect.without_exposure``: the same check and band; a
  reviewer found 67 of 741 rows of a run that the band executed alike, and a headline of
  +1.22% for +1.45%), both signed fractions of equity at the exposure marked at the
  bar's close (a ``hold`` keeps it);
* ``next_return``: the close-to-close return over the next ``horizon_bars`` bars, close
  ``i + horizon_bars`` / close ``i`` - 1 (a fraction; NaN when the run ends before that);
  the closes are read from ``BacktestResult.buy_and_hold``, which is proportional to them;
* ``difference``: ``(target_exposure - without_exposure) * next_return``, the PnL memory's
  change made over the horizon as a fraction of equity (> 0: memory helped). It ignores
  fees, slippage, compounding, the next-open fill and later decisions; horizons of changes
  fewer than ``horizon_bars`` bars apart overlap, so their sum counts those moves again;
* ``bar_difference``: the same exposure difference times the next bar's return only
  (close ``i + 1`` / close ``i`` - 1). A decision is taken at every bar, so these do not
  overlap: their sum is the report's headline, what memory's changes made at the bars
  they were made (positions that differ later because of an earlier change, fees and
  compounding are not counted; memory's whole effect is the ablation's to measure).
"""

from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd

from backend.backtest.engine import BacktestResult, utc_timestamp
from backend.backtest.models import Decision, DecisionRecord, MemoryEffect

__all__ = ["COLUMNS", "KINDS", "memory_changes_frame", "memory_changes_section"]

KINDS = ("vetoed", "resized", "redirected")
COLUMNS = [
    "time",
    "kind",
    "action",
    "size",
    "target_exposure",
    "without_action",
    "without_size",
    "without_exposure",
    "reasons",
    "memory_ids",
    "horizon_bars",
    "next_return",
    "difference",
    "bar_difference",
]
"""``memory_changes.csv``'s header: time ISO-8601 UTC (the bar close); sizes and exposures
fractions of equity; ``reasons`` joined by `` | ``, ``memory_ids`` by spaces;
``next_return`` a fraction; ``difference`` and ``bar_difference`` fractions of equity (see
the module doc)."""
_MAX_IDS_SHOWN = 6
_SAME = 1e-9


def _effect(record: DecisionRecord) -> MemoryEffect | None:
    """The policy answer's effect (the executed decision's when the check dropped it)."""
    return record.proposed.memory_effect or record.decision.memory_effect


def memory_changes_frame(result: BacktestResult, *, horizon_bars: int = 24) -> pd.DataFrame:
    """One row per decision of ``result`` that memory changed, in time order, with
    :data:`COLUMNS` (units in the module doc). ``horizon_bars`` (>= 1): the agent's outcome
    horizon in bars. Records whose time is not a bar close of the run get NaN returns."""
    if horizon_bars < 1:
        raise ValueError(f"horizon_bars must be >= 1, got {horizon_bars}")
    times = pd.DatetimeIndex(result.equity.index)
    closes = result.buy_and_hold.to_numpy(dtype=np.float64)
    exposure = result.exposure.to_numpy(dtype=np.float64)
    rows: list[dict[str, object]] = []
    for record in result.decisions:
        effect = _effect(record)
        if effect is None:
            continue
        stamp = utc_timestamp(record.as_of)
        pos = int(times.searchsorted(stamp))
        found = pos < len(times) and times[pos] == stamp
        current = float(exposure[pos]) if found else 0.0
        taken = record.decision.target_exposure(current)
        without_exposure = effect.without_exposure
        if without_exposure is None:  # a record of an older release: the answer as given
            without = Decision(action=effect.without_action, size=effect.without_size)
            without_exposure = without.target_exposure(current)
        if abs(taken - without_exposure) <= _SAME:
            continue  # executed alike (the no-trade band held both): memory changed nothing
        ahead = pos + horizon_bars
        next_return = (
            float(closes[ahead] / closes[pos] - 1.0) if found and ahead < len(closes) else math.nan
        )
        bar_return = (
            float(closes[pos + 1] / closes[pos] - 1.0)
            if found and pos + 1 < len(closes)
            else math.nan
        )
        rows.append(
            {
                "time": stamp.isoformat(),
                "kind": effect.kind,
                "action": record.decision.action,
                "size": record.decision.size,
                "target_exposure": taken,
                "without_action": effect.without_action,
                "without_size": effect.without_size,
                "without_exposure": without_exposure,
                "reasons": " | ".join(effect.reasons),
                "memory_ids": " ".join(record.memory_ids or record.proposed.memory_ids),
                "horizon_bars": horizon_bars,
                "next_return": next_return,
                "difference": (taken - without_exposure) * next_return,
                "bar_difference": (taken - without_exposure) * bar_return,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


# --------------------------------------------------------------------- html
def _pct(value: float, *, sign: bool = True) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value * 100:+.2f}%" if sign else f"{value * 100:.2f}%"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _what(action: str, size: float, exposure: float) -> str:
    if action in ("buy", "sell"):
        return f"{action} {size:.2f}"
    if action == "hold":
        return f"hold (keeps {exposure:+.2f})"
    return action


def _helped(difference: float) -> str:
    if math.isnan(difference):
        return "n/a (run ended)"
    if difference > 0:
        return "yes"
    return "no" if difference < 0 else "no difference"


def _ids(joined: str) -> str:
    ids = joined.split()
    if not ids:
        return "none recorded"
    more = len(ids) - _MAX_IDS_SHOWN
    shown = ", ".join(ids[:_MAX_IDS_SHOWN])
    return f"{shown} (+{more} more)" if more > 0 else shown


def _without(row: pd.Series) -> str:
    """The answer without memory, with the exposure it would have been executed at when
    the check or the band changed it ("sell 0.32, executed -0.32": the band kept the
    position; a reader saw the raw answer beside a difference computed on the executed)."""
    action, size = str(row["without_action"]), float(row["without_size"])
    executed = float(row["without_exposure"])
    said = _what(action, size, executed)
    asked = {"buy": size, "sell": -size}.get(action)
    if asked is not None and abs(asked - executed) > _SAME:
        said += f", executed {executed:+.2f}"
    return said


def _row(row: pd.Series) -> str:
    reasons = "<br>".join(html.escape(r) for r in str(row["reasons"]).split(" | ") if r)
    cells = [
        (str(row["time"]), "l"),
        (_what(str(row["action"]), float(row["size"]), float(row["target_exposure"])), "l"),
        (_without(row), "l"),
        (str(row["kind"]), "l"),
        (None, "l"),
        (_ids(str(row["memory_ids"])), "l"),
        (_pct(float(row["next_return"])), ""),
        (_pct(float(row["difference"])), ""),
        (_helped(float(row["difference"])), "l"),
    ]
    tds = []
    for text, cls in cells:
        body = (reasons or "—") if text is None else html.escape(text)
        tds.append(f'<td class="{cls}">{body}</td>' if cls else f"<td>{body}</td>")
    return "<tr>" + "".join(tds) + "</tr>"


def _overlaps(frame: pd.DataFrame, result: BacktestResult, horizon_bars: int) -> int:
    """Rows of ``frame`` whose bar is fewer than ``horizon_bars`` bars after the previous
    row's (their horizons overlap)."""
    positions = pd.DatetimeIndex(result.equity.index).searchsorted(
        pd.DatetimeIndex(pd.to_datetime(frame["time"], utc=True))
    )
    return int(np.count_nonzero(np.diff(positions) < horizon_bars))


def memory_changes_section(
    frame: pd.DataFrame,
    result: BacktestResult,
    *,
    memory: bool | None,
    horizon_bars: int,
    max_rows: int = 50,
) -> str:
    """The report's "Decisions memory changed" section for ``frame`` (from
    :func:`memory_changes_frame`): counts per kind, the total difference, and the
    ``max_rows`` changes with the largest |difference| (most consequential first, then the
    most recent). ``memory``: whether the run used memory (None: unknown)."""
    head = "<h2>Decisions memory changed</h2>"
    if frame.empty:
        if memory is False:
            line = "Memory was off for this run, so memory changed no decision."
        elif any(r.proposed.model is not None for r in result.decisions):
            line = (  # it said so of a chat model, which never reports it (a reviewer's)
                "A chat model decided this run: it does not say what it would have decided "
                "without memory, so no change is listed; the ablation (sentinel eval "
                "ablation) measures memory's whole effect."
            )
        else:
            line = f"Memory changed none of the run's {len(result.decisions)} decisions."
        return head + f'<p class="muted">{line}</p>'
    counts = frame["kind"].value_counts()
    sums = frame.groupby("kind")["bar_difference"].sum(min_count=1)
    count_rows = "".join(
        f'<tr><th class="l">{kind}</th><td>{int(counts.get(kind, 0))}</td>'
        f"<td>{_pct(float(sums.get(kind, math.nan)))}</td></tr>"
        for kind in KINDS
    )
    counted = frame["difference"].notna()
    total = float(frame["bar_difference"].sum())
    notes = [
        f"{len(frame)} of {len(result.decisions)} decisions. What happened next: the "
        f"close-to-close return over the next {horizon_bars} bars (the agent's outcome "
        "horizon) after the decision; difference = (target exposure taken - target exposure "
        "without memory) x that return, in % of equity (> 0: memory's change helped)."
    ]
    if (~counted).any():
        notes.append(
            f"{_n(int((~counted).sum()), 'change')} less than {horizon_bars} bars before the "
            f"run's end: no {horizon_bars}-bar return yet (n/a below); the total above counts "
            "their next bar like every other change's."
        )
    overlapping = _overlaps(frame.loc[counted], result, horizon_bars)
    if overlapping:
        notes.append(
            f"{_n(overlapping, 'change')} came fewer than {horizon_bars} bars after the "
            "previous one: their horizons overlap, so the rows' differences must not be "
            "added up (the total above uses one bar per change)."
        )
    order = frame.assign(
        _abs=frame["difference"].abs().fillna(-1.0), _pos=np.arange(len(frame))
    ).sort_values(["_abs", "_pos"], ascending=False)
    shown = order.head(max_rows)
    header = "".join(
        f'<th class="l">{html.escape(name)}</th>'
        for name in (
            "time (UTC)",
            "taken",
            "without memory",
            "kind",
            "reasons",
            "memories",
            f"next {horizon_bars} bars",
            "difference (% of equity)",
            "helped",
        )
    )
    hidden = len(frame) - len(shown)
    hidden_note = (
        f'<p class="muted">{_n(hidden, "more changed decision")} not listed (all are in '
        "memory_changes.csv).</p>"
        if hidden > 0
        else ""
    )
    return (
        head
        + '<table><tr><th class="l">kind</th><th>decisions</th><th>difference (next bar)</th></tr>'
        + count_rows
        + "</table>"
        + f"<p><b>memory's changes: {_pct(total)} of equity over the run</b>, at the bars they "
        "were made (each change's exposure difference times the next bar's return, summed: "
        "the bars do not overlap). Positions that still differ at later bars because of an "
        "earlier change, fees and compounding are not counted: memory's whole effect is what "
        "the ablation measures (<code>sentinel eval ablation</code>).</p>"
        + "".join(f'<p class="muted">{html.escape(n, quote=False)}</p>' for n in notes)
        + f"<h3>Most consequential first ({len(shown)} of {len(frame)})</h3>"
        + f"<table><tr>{header}</tr>"
        + "".join(_row(row) for _, row in shown.iterrows())
        + "</table>"
        + hidden_note
    )
