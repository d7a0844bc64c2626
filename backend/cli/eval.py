"""``sentinel eval ...``: evaluations of the memory module on public data, each writing
one JSON file.

A typer sub-app; ``backend.cli`` registers it with ``app.add_typer(eval_cli.app,
name="eval")``, and its ``main()`` turns a :class:`~backend.errors.SentinelError` (a
damaged input file is a :class:`~backend.errors.DataError` naming the file) into one line
on stderr, exit 2::

    sentinel eval locomo --data ../shared/data/locomo/locomo_dev.json --out runs/locomo.json
    sentinel eval ablation --data-dir ../shared/data/market/binance \\
        --pairs BTC/USDT,ETH/USDT,SOL/USDT --timeframes 1h,4h --out runs/ablation.json \\
        [--start 2021-01-01 --end 2026-01-01 --window-months 6 --modes off,persona,...] \\
        [--trader 0x083384f8 --fills ../shared/data/trades/hyperliquid_fills.csv] \\
        [--html runs/ablation.html]
    sentinel eval persona --fills ../shared/data/trades/hyperliquid_fills.csv \\
        --out runs/persona_validity.json [--horizon-days 30 --recent-days 7 --every-days N]

``locomo`` ingests every conversation through the product (``MemoryToolkit
.record_messages``, default configuration, ``store.backend=memory``: nothing on disk),
ranks ``hierarchical`` through ``MemoryToolkit.recall`` and the flat baselines through
``KhalaStore.search`` over the same messages (``--conversations`` picks sample ids), and
writes the :class:`~backend.eval.locomo_models.LocomoReport` JSON to ``--out``
(``{"conversations", "n_questions", "methods": {"dense"|"bm25"|"hybrid"|"hierarchical":
{"recall@1", "recall@5", "recall@10", "recall@25", "latency_ms_p50", "latency_ms_p95",
"tokens_per_query", "per_category": {...}}}, "splits": {"tuning"|"validation":
{"conversations", "methods", "per_category"}}, "questions": [{"conversation_id",
"question_index", "category", "evidence", "ranked": {method: ids}}], ...}``, recall as
fractions; each split of ``SPLITS`` the run touched is scored apart, and printed when
the run is not the tuning split alone). Progress goes to
stderr, a summary table to stdout. With ``llm.base_url`` and ``llm.model`` configured,
questions of categories 1-4 are also answered and scored by token F1. Persona facts are
read by the offline rules even then (one LLM call per turn would cost more than the
whole benchmark).

Ablation and persona output files are written atomically (a temporary file in the same
directory, then ``os.replace``); the ablation writes its progress after every run to
``<out stem>.partial.json`` (``"complete": false``, the runs so far; an interrupted run
leaves a previous ``--out`` file as it was), then ``--out`` itself when the last run is
done (the progress file is then removed), then its HTML page (``--html``, default
the ``--out`` path with suffix ``.html``: the modes' chained equity curves and summary
tables, :mod:`backend.eval.ablation_report`) and the curves themselves as CSV (the
``--out`` path with suffix ``.curves.csv``), from which the summary's chained numbers can
be computed again. ``--trader``/``--fills`` (both or neither,
else a ConfigError) make every run that trader's agent; a trader without fills in the
file is a DataError naming the file; so is a pair without candles in any window
(before anything runs). ``--modes`` repeated count once. The JSON's ``news`` names the
headline and Fear & Greed files the runs read (None, and a warning on stderr, for a
missing one), ``policy`` the agent's policy, and ``warnings`` one line per window the
trader's fills do not cover (:func:`backend.eval.ablation.fills_span_warnings`) and per
run whose chat model answered too few decisions or whose memory failed
(``run_warning``), also printed after the table. A table of the headline numbers goes to stdout.
An ablation with a run whose LLM or memory failed (``dependency_failure``) exits 3 after
writing every file.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from backend.backtest.metrics import below_share
from backend.cli._common import DEPENDENCY_FAILED, console, settings, split_values, write_json
from backend.cli._eval_ablation import ablation
from backend.config import Settings
from backend.errors import ConfigError
from backend.eval.locomo_models import CATEGORY_NAMES, LocomoReport, MethodName
from backend.files import check_writable, write_text_atomic

__all__ = [
    "ablation",
    "app",
    "locomo",
    "persona",
    "run_locomo_command",
    "write_report",
]

app = typer.Typer(
    help="Evaluate the memory: LoCoMo retrieval, backtest ablation, persona validity.",
    no_args_is_help=True,
)


def write_report(report: LocomoReport, out: Path) -> None:
    """Write ``report`` as JSON (aliases: ``recall@10``) to ``out`` atomically
    (:func:`backend.files.write_atomic`). Raises :class:`DataError` naming the file."""
    payload = json.dumps(report.model_dump(mode="json", by_alias=True), indent=2)
    write_text_atomic(out, payload, what="report")


def run_locomo_command(
    cfg: Settings,
    *,
    data: Path,
    out: Path,
    limit: int | None = None,
    methods: list[MethodName] | None = None,
    context_turns: int = 10,
    quiet: bool = False,
    max_questions: int | None = None,
    conversations: list[str] | None = None,
) -> LocomoReport:
    """Load ``data``, build the eval memory (module doc), run, write ``out``; returns the
    report. ``max_questions``: only the first N questions of each conversation;
    ``conversations``: only these sample ids. Raises :class:`DataError` (bad file),
    :class:`ConfigError` (an unknown sample id), store errors."""
    from backend.compose import build_memory_system
    from backend.eval.locomo_data import load_locomo
    from backend.eval.locomo_run import ALL_METHODS, run_locomo
    from backend.llm import build_llm

    check_writable(out, what="report JSON")  # before the evaluation, not after it
    dataset = load_locomo(data, limit=limit)
    if conversations is not None:
        known = {c.sample_id for c in dataset.conversations}
        unknown = [c for c in conversations if c not in known]
        if unknown:
            among = f"the first {limit} of {data} (--limit)" if limit is not None else str(data)
            raise ConfigError(f"--conversations: not in {among}: {', '.join(unknown)}")
        dataset = dataset.model_copy(
            update={
                "conversations": [c for c in dataset.conversations if c.sample_id in conversations]
            }
        )
    # the product with its default configuration, on a throwaway store; persona facts
    # by the offline rules (an LLM call per turn would cost more than the benchmark)
    with build_memory_system(cfg.offline()) as system:
        report = run_locomo(
            dataset,
            system.toolkit,
            system.store,
            methods=methods or ALL_METHODS,
            llm=build_llm(cfg.llm),
            budget=cfg.memory.token_budget,
            context_turns=context_turns,
            progress=None if quiet else (lambda line: print(line, file=sys.stderr)),
            max_questions=max_questions,
        )
    write_report(report, out)
    return report


def _methods(value: str | None) -> list[MethodName] | None:
    if value is None:
        return None
    from backend.eval.locomo_run import ALL_METHODS

    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in ALL_METHODS]
    if bad or not names:
        raise ConfigError(f"--methods: expected some of {', '.join(ALL_METHODS)}, got {value!r}")
    return [m for m in ALL_METHODS if m in names]


@app.command("locomo")
def locomo(
    data: Annotated[Path, typer.Option(help="LoCoMo JSON file (locomo10.json format).")],
    out: Annotated[Path, typer.Option(help="Where to write the report JSON.")],
    limit: Annotated[
        int | None, typer.Option(min=1, help="Only the first N conversations.")
    ] = None,
    methods: Annotated[
        str | None, typer.Option(help="Comma-separated subset of dense,bm25,hybrid,hierarchical.")
    ] = None,
    context_turns: Annotated[
        int,
        typer.Option(
            min=1,
            max=100,
            help="Turns in each question's context, for the flat baselines (hierarchical: "
            "the product's memory.conversation.context_messages).",
        ),
    ] = 10,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress on stderr.")] = False,
    questions: Annotated[
        int | None,
        typer.Option(min=1, help="Only the first N questions of each conversation."),
    ] = None,
    conversations: Annotated[
        str | None,
        typer.Option(help="Only these sample ids, comma-separated (e.g. conv-42,conv-43)."),
    ] = None,
) -> None:
    """LoCoMo retrieval: recall@k of the evidence turns per method and category.

    Recall@1/5/10/25, latency p50/p95 and context tokens per query, and answer
    F1 when an LLM is configured (exit 3 when it answered less than
    llm.min_answered_share of the questions)."""

    cfg = settings()
    report = run_locomo_command(
        cfg,
        data=data,
        out=out,
        limit=limit,
        methods=_methods(methods),
        context_turns=context_turns,
        quiet=quiet,
        max_questions=questions,
        conversations=split_values(conversations, name="conversations") if conversations else None,
    )
    table = Table("method", "R@1", "R@5", "R@10", "R@25", "p50 ms", "p95 ms", "tokens")
    for name, m in report.methods.items():
        table.add_row(
            name,
            *(f"{v:.3f}" for v in (m.recall_1, m.recall_5, m.recall_10, m.recall_25)),
            f"{m.latency_ms_p50:.1f}",
            f"{m.latency_ms_p95:.1f}",
            f"{m.tokens_per_query:.0f}",
        )
    console.print(table)
    cats = Table("method", *(f"R@10 {c} {CATEGORY_NAMES[c]}" for c in sorted(CATEGORY_NAMES)))
    for name, m in report.methods.items():
        cells = [m.per_category.get(str(c)) for c in sorted(CATEGORY_NAMES)]
        cats.add_row(name, *(f"{c.recall_10:.3f} (n={c.n})" if c else "-" for c in cells))
    console.print(cats)
    if set(report.splits) != {"tuning"}:  # the tables above pool the splits: each apart
        for split, part in report.splits.items():
            line = ", ".join(f"{m} {r.recall_10:.3f}" for m, r in part.methods.items())
            console.print(
                f"R@10 on the {split} split ({', '.join(part.conversations)}; "
                f"{next(iter(part.methods.values())).n} questions): {line}"
            )
    failed, share = False, cfg.llm.min_answered_share
    for name, m in report.methods.items():
        if m.answer_f1 is not None:  # an LLM answered: F1, and how often it did not
            a = m.answer_f1
            why = f" (first: {a.first_error})" if a.first_error else ""
            missed = below_share(a.n - a.failed, a.n, min_share=share)
            failed |= missed
            console.print(
                f"{name}: answer F1 {a.f1:.3f} over {a.n} questions, "
                f"{a.failed} unanswered by the LLM{why}",
                style="bold red" if missed else None,
                markup=False,  # the error is a server's text: never read as markup
            )
    console.print(f"{report.n_questions} questions; report written to {out}")
    if failed:  # the report is written; its F1 is not the model's
        raise typer.Exit(DEPENDENCY_FAILED)


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


app.command("ablation")(ablation)


@app.command("persona")
def persona(
    fills: Annotated[Path, typer.Option(help="Fills CSV in the Hyperliquid export format.")],
    out: Annotated[Path, typer.Option(help="JSON file to write.")],
    horizon_days: Annotated[int, typer.Option(min=1, max=3650, help="Prediction horizon.")] = 30,
    recent_days: Annotated[int, typer.Option(min=1, max=3650, help="recent7d look-back.")] = 7,
    every_days: Annotated[
        int | None,
        typer.Option(min=1, max=3650, help="Evaluate every N days (default: month starts)."),
    ] = None,
) -> None:
    """Persona predictive validity: predict each trader's next days from the profile.

    Each trader's next --horizon-days are predicted from the profile at t
    (persona), the other traders' average (prior) and the last --recent-days
    (recent7d)."""
    from backend.data.fills import load_hyperliquid_fills
    from backend.errors import DataError
    from backend.eval.persona_validity import evaluate_persona_validity

    settings()  # a bad --config or environment value stops here, as in every command
    check_writable(out, what="report JSON")  # before the evaluation, not after it
    loaded = load_hyperliquid_fills(fills, not_after=datetime.now(UTC))  # the CLI's clock
    result = evaluate_persona_validity(
        loaded, horizon_days=horizon_days, recent_days=recent_days, every_days=every_days
    )
    if not result["evaluation_points"]:  # a report of nothing is no measurement
        first = min(f.datetime for f in loaded).date().isoformat()
        last = max(f.datetime for f in loaded).date().isoformat()
        every = f"every {every_days} days" if every_days else "each month start"
        raise DataError(
            f"no evaluation point: no trader has fills both before a time ({every} inside "
            f"their fills, {first} to {last}) and in the --horizon-days {horizon_days} "
            f"after it inside the file ({len(result['cut_points'])} time(s) end after its "
            "last fill); nothing was written",
            path=fills,
        )
    result["config"]["fills_path"] = str(fills)
    write_json(out, result)
    n, traders = result["evaluation_points"], len(result["config"]["traders"])
    title = f"{n} points, {traders} trader(s); written to {out}"
    console.print(_persona_table(result["methods"], title))
    if result["common_points"] < n:  # methods averaged over different points: compare here
        console.print(_persona_table(
            result["common"], f"the {result['common_points']} points where all three predicted"
        ))  # fmt: skip
    if pooled := result["prior_pooled_points"]:
        console.print(
            f"prior: at {pooled} of {n} points no other trader had fills yet, so the prior "
            "is the pooled fills of the file, there the trader's own (prior = persona)",
            markup=False,
        )
    if cut := result["cut_points"]:
        console.print(
            f"not scored: {len(cut)} time(s) whose {horizon_days} days end after the file's "
            "last fill (their future is not in the file)",
            markup=False,
        )


def _persona_table(methods: dict[str, Any], title: str) -> Table:
    """One row per predictor of ``sentinel eval persona`` (its scores, ``n_points``)."""
    from backend.eval.persona_validity import METHODS

    table = Table(
        "method", "top-3 hit", "top-3 overlap", "long-share MAE", "|ln notional|", "holding acc.",
        "points", title=title,
    )  # fmt: skip
    for method in METHODS:
        s = methods[method]
        table.add_row(
            method,
            _fmt(s["top3_asset_hit_rate"], ".3f"),
            _fmt(s["top3_asset_overlap"], ".3f"),
            _fmt(s["long_share_mae"], ".3f"),
            _fmt(s["median_notional_abs_log_error"], ".3f"),
            _fmt(s["holding_bucket_accuracy"], ".3f"),
            str(s["n_points"]),
        )
    return table
