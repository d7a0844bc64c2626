"""The ablation as one offline HTML page: the modes' chained equity curves side by side.

:func:`write_ablation_html` writes, for each pair and timeframe, one figure with the
chained equity curve of every mode and of buy-and-hold on the same axes (matplotlib Agg,
embedded as a base64 PNG ``<img>``), the table of the summary numbers and the paired
mode-vs-off comparison. Curves and numbers come from :mod:`backend.eval.ablation_summary`
(the code the JSON summary uses). Inline CSS only: no script, font, stylesheet or link to
anything outside the file.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from backend.backtest.metrics import share_text
from backend.backtest.report import figure_img, naive_utc
from backend.eval.ablation import AblationOutcome
from backend.eval.ablation_summary import (
    MIN_BOOTSTRAP_WINDOWS,
    RunOutput,
    chain_curves,
    compare_modes,
    group_runs,
    summarize,
)
from backend.files import write_text_atomic

__all__ = ["CURVE_COLUMNS", "write_ablation_curves", "write_ablation_html"]

_COLORS = {
    "off": "#7f7f7f",
    "persona": "#1f77b4",
    "persona_working": "#2ca02c",
    "all": "#d62728",
    "buy_and_hold": "#bbbbbb",
}
_CSS = """
body{font-family:sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:12px;margin:8px 0}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f0f0f0}td.l,th.l{text-align:left}
img{max-width:100%}.muted{color:#777;font-size:12px}
.warn{background:#fdecea;border:1px solid #c0392b;color:#922;padding:6px 10px;margin:6px 0}
"""
_COLUMNS = (
    ("return", "total_return", "{:+.2%}"),
    ("Sharpe", "sharpe", "{:.2f}"),
    ("Sortino", "sortino", "{:.2f}"),
    ("max DD", "max_drawdown", "{:.2%}"),
    ("trades", "n_trades", "{:d}"),
    ("fees", "fees_paid", "{:,.2f}"),
    ("turnover", "turnover", "{:.2f}"),
    ("violations", "violations", "{:d}"),
    ("persona alignment", "persona_alignment", "{:.3f}"),
    ("LLM answered", "llm_answered_share", "share"),
    ("memory errors", "memory_error_decisions", "{:d}"),
)


def _order(mode: str) -> tuple[int, str]:
    """Modes in :data:`_COLORS` order (off first, buy-and-hold last), others after."""
    names = list(_COLORS)
    return (names.index(mode) if mode in names else len(names), mode)


def _figure(
    title: str, curves: dict[str, pd.Series], seams: Sequence[pd.Timestamp], initial: float
) -> str:
    fig = Figure(figsize=(11, 4.5))
    ax = fig.add_subplot()
    for name, path in curves.items():
        if path.empty:
            continue
        held = name == "buy_and_hold"
        ax.plot(
            naive_utc(path.index), path.to_numpy() * initial, label=name.replace("_", " "),
            color=_COLORS.get(name), lw=1.0 if held else 1.3, ls="--" if held else "-",
        )  # fmt: skip
    for seam in seams[1:]:
        ax.axvline(naive_utc(pd.DatetimeIndex([seam]))[0], color="#cccccc", lw=0.6, ls=":")
    ax.set_ylabel("chained equity (quote currency)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.autofmt_xdate()
    return figure_img(fig, alt="chained equity")


def _cell(value: Any, spec: str, *, min_share: float = 0.0) -> str:
    if value is None:
        return "-"
    if spec == "share":  # a share below the floor never reads as the floor (94.9%, not 95%)
        return share_text(float(value), against=min_share)
    try:
        return spec.format(value)
    except (TypeError, ValueError):
        return str(value)


def _summary_table(by_mode: dict[str, dict[str, Any]], *, min_share: float) -> str:
    head = '<th class="l">mode</th>' + "".join(f"<th>{html.escape(c)}</th>" for c, _, _ in _COLUMNS)
    rows = []
    for mode, entry in by_mode.items():
        cells = "".join(
            f"<td>{html.escape(_cell(entry.get(key), spec, min_share=min_share))}</td>"
            for _, key, spec in _COLUMNS
        )
        named = entry.get("persona_alignment_parts", {})
        parts = ", ".join(f"{k} {v:.2f}" for k, v in named.items())
        rows.append(
            f'<tr><td class="l">{html.escape(mode)}</td>{cells}'
            f'<td class="l">{html.escape(parts)}</td></tr>'
        )
    return f'<table><tr>{head}<th class="l">alignment parts</th></tr>{"".join(rows)}</table>'


def _comparison_table(by_name: dict[str, dict[str, Any]]) -> str:
    if not by_name:
        return ""

    def interval(c: dict[str, Any]) -> str:
        ci = c["ci95"]
        return "too few windows" if ci is None else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"

    rows = "".join(
        f'<tr><td class="l">{html.escape(name)}</td><td>{c["sharpe_diff_chained"]:+.3f}</td>'
        f"<td>{c['sharpe_diff']:+.3f}</td><td>{html.escape(interval(c))}</td>"
        f"<td>{c['windows']}</td><td>{_cell(c['max_drawdown_ratio'], '{:.3f}')}</td></tr>"
        for name, c in by_name.items()
    )
    return (
        '<table><tr><th class="l">paired</th><th>chained Sharpe diff</th>'
        "<th>mean per-window Sharpe diff</th><th>its 95% bootstrap</th>"
        f"<th>windows</th><th>max DD ratio</th></tr>{rows}</table>"
        '<p class="muted">Chained: the Sharpe of the windows\' bar returns put together, as in '
        "the table above. Per window: the mean of each window's Sharpe difference against "
        f"off, windows resampled for the interval (none below {MIN_BOOTSTRAP_WINDOWS} "
        "windows); the two can differ in sign.</p>"
    )


def _render(
    outputs: Sequence[RunOutput], *, title: str, warnings: Sequence[str], min_share: float
) -> str:
    summary = summarize(outputs)
    comparison = compare_modes(outputs, summary)
    groups = group_runs(outputs)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p>Each mode's walk-forward windows chained end to end (each window restarts flat "
        "from the capital the previous one ended with; dotted lines mark window starts; a "
        "position open at a window's end is marked at its close, not sold, so its exit's fee "
        "and slippage are left out), buy-and-hold dashed (bought at each window's first "
        "close, no fee or slippage; the move from a window's last close to the next one's "
        "first close counts for no mode, buy-and-hold included). Returns and drawdowns "
        "are fractions shown in percent; fees in the quote currency; Sharpe and Sortino "
        "annualised, rf 0; persona alignment 0..1 (higher is closer to the trader), "
        "decision-weighted over windows.</p>",
        *(f'<p class="warn">WARNING: {html.escape(w)}</p>' for w in warnings),
    ]
    for pair, by_tf in summary.items():
        for tf, by_mode in by_tf.items():
            runs = {m: g for (p, t, m), g in groups.items() if (p, t) == (pair, tf)}
            runs = dict(sorted(runs.items(), key=lambda kv: _order(kv[0])))
            by_mode = dict(sorted(by_mode.items(), key=lambda kv: _order(kv[0])))
            first = next(iter(runs.values()))
            initial = first[0].initial_equity
            curves = {m: chain_curves([o.equity for o in g], initial=initial).path
                      for m, g in runs.items()}  # fmt: skip
            curves["buy_and_hold"] = chain_curves(
                [o.buy_and_hold for o in first], initial=initial
            ).path
            seams = [o.equity.index[0] for o in first if len(o.equity)]
            parts += [
                f"<h2>{html.escape(pair)} {html.escape(tf)}</h2>",
                _figure(f"{pair} {tf}: chained equity by mode", curves, seams, initial),
                _hidden_curves(curves),
                _summary_table(by_mode, min_share=min_share),
                _comparison_table(comparison.get(pair, {}).get(tf, {})),
            ]
    if not summary:
        parts.append('<p class="muted">No runs.</p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _hidden_curves(curves: dict[str, pd.Series]) -> str:
    """A line naming the modes whose curve equals an earlier one's (drawn under it: a
    reviewer saw no ``off`` curve where it was ``persona``'s to the cent), else ""."""
    same = []
    names = list(curves)
    for i, name in enumerate(names):
        twin = next((o for o in names[:i] if curves[o].equals(curves[name])), None)
        if twin is not None:
            same.append(f"{name} is identical to {twin}")
    if not same:
        return ""
    return f'<p class="muted">Curves drawn one over the other: {html.escape("; ".join(same))}.</p>'


CURVE_COLUMNS = ("time", "pair", "timeframe", "mode", "window_start", "equity")
"""The columns of :func:`write_ablation_curves`'s CSV."""


def write_ablation_curves(result: AblationOutcome | Sequence[RunOutput], path: Path) -> None:
    """Write every mode's chained equity curve, the ones the summary's chained
    ``total_return``, ``sharpe`` and ``max_drawdown`` and the page's figures are computed
    from, to the CSV ``path`` (:data:`CURVE_COLUMNS`; ``time`` the bar close, ISO-8601 UTC;
    ``equity`` in the quote currency, chained from the initial equity; buy-and-hold as mode
    ``buy_and_hold``), atomically. Raises :class:`DataError` naming the file when it
    cannot be written."""
    outputs = result.outputs if isinstance(result, AblationOutcome) else list(result)
    frames = []
    held: set[tuple[str, str]] = set()  # buy-and-hold once per pair and timeframe
    for (pair, tf, mode), runs in group_runs(outputs).items():
        initial = runs[0].initial_equity
        curves = {mode: [o.equity for o in runs]}
        if (pair, tf) not in held:
            held.add((pair, tf))
            curves["buy_and_hold"] = [o.buy_and_hold for o in runs]
        starts = [o.run.window_start.isoformat() for o in runs for _ in range(len(o.equity))]
        for name, pieces in curves.items():
            chained = chain_curves(pieces, initial=initial).path
            frames.append(
                pd.DataFrame(
                    {
                        "time": [t.isoformat() for t in chained.index],
                        "pair": pair,
                        "timeframe": tf,
                        "mode": name,
                        "window_start": starts,
                        "equity": chained.to_numpy() * initial,
                    }
                )
            )
    table = pd.concat(frames) if frames else pd.DataFrame(columns=list(CURVE_COLUMNS))
    write_text_atomic(path, table[list(CURVE_COLUMNS)].to_csv(index=False), what="curves CSV")


def write_ablation_html(
    result: AblationOutcome | Sequence[RunOutput],
    path: Path,
    *,
    title: str = "Memory ablation: chained equity by mode",
    warnings: Sequence[str] = (),
    min_llm_share: float = 0.0,
) -> None:
    """Write the page of ``result`` (an ablation's outcome or its runs) to ``path``, with
    ``warnings`` (what failed: a chat model that did not answer, a memory that failed; the
    run's ``warnings``) at the top and each mode's LLM answered share (written so that a
    share below ``min_llm_share``, ``llm.min_answered_share``, never reads as it) and
    memory errors in its table, atomically (:func:`backend.files.write_atomic`; parents
    created). Raises :class:`DataError` naming the file when it cannot be written."""
    outputs = result.outputs if isinstance(result, AblationOutcome) else list(result)
    page = _render(outputs, title=title, warnings=warnings, min_share=min_llm_share)
    write_text_atomic(path, page, what="HTML page")
