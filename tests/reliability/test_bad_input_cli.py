"""Issue 7.2 — bad input, part 3: every CLI command (data check, data download, memory
search, persona show, backtest, replay-trades, demo) turns damaged files and bad
arguments into one line on stderr and exit status 2 (in process, through ``main()``)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from backend.cli import main
from tests.reliability.test_bad_input import (
    FILL_ROWS,
    FILLS_HEADER,
    damaged,
    ohlcv_file,
)

# ------------------------------------------------------------------ the CLI


def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["sentinel", *args])
    monkeypatch.setenv("SENTINEL_EMBEDDING__PROVIDER", "hashing")
    with pytest.raises(SystemExit) as caught:
        main()
    return int(caught.value.code or 0), capsys.readouterr().err


def cli_cases(tmp: Path) -> dict[str, Callable[[str], list[str]]]:
    """Per command: argv for a data directory damaged with ``kind``."""

    def market(kind: str) -> Path:
        folder = tmp / f"market-{kind}" / "market" / "binance"
        folder.mkdir(parents=True, exist_ok=True)
        ohlcv_file(folder, kind, gz=kind == "undecodable")
        return folder

    def fills(kind: str) -> Path:
        path = tmp / f"fills-{kind}.csv"
        path.write_bytes(damaged(FILLS_HEADER, FILL_ROWS, kind, date_col=6, num_col=4))
        return path

    return {
        "data check": lambda k: [
            "data",
            "check",
            "--pair",
            "BTC/USDT",
            "--timeframe",
            "1h",
            "--data-dir",
            str(market(k)),
        ],
        "backtest": lambda k: [
            "backtest",
            "--pair",
            "BTC/USDT",
            "--timeframe",
            "1h",
            "--data-dir",
            str(market(k)),
            "--out",
            str(tmp / "out"),
            "--memory",
            "off",
        ],
        "demo": lambda k: [
            "demo",
            "--data-dir",
            str(market(k).parent.parent),
            "--store-path",
            str(tmp / "demo-store"),
        ],
        "persona show": lambda k: [
            "persona",
            "show",
            "--trader",
            "0xabc",
            "--fills",
            str(fills(k)),
        ],
        "replay-trades": lambda k: [
            "replay-trades",
            "--trader",
            "0xabc",
            "--fills",
            str(fills(k)),
            "--out",
            str(tmp / "replay"),
        ],
    }


FILE_KINDS = [
    "wrong-delimiter",
    "undecodable",
    "huge-number",
    "empty",
    "header-only",
    "cut-mid-row",
]


@pytest.mark.parametrize(
    "command", ["data check", "backtest", "demo", "persona show", "replay-trades"]
)
def test_every_file_command_prints_one_line_and_exits_2(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    build = cli_cases(tmp_path)[command]
    kinds = FILE_KINDS + (
        ["day-first-dates", "epoch-us"]
        if command in ("data check", "backtest", "demo")
        else ["month-first-dates", "iso-dates"]
    )
    for kind in kinds:
        code, err = run_cli(monkeypatch, capsys, *build(kind))
        lines = err.strip().splitlines()
        assert code == 2, f"{command} / {kind}: exit {code}: {err[-500:]}"
        assert len(lines) == 1 and lines[0].startswith("sentinel: error:"), (command, kind, err)
        assert "Traceback" not in err


@pytest.mark.parametrize(
    "args",
    [
        [
            "data",
            "download",
            "--pair",
            "BTC/USDT",
            "--timeframe",
            "1h",
            "--since",
            "13/01/2024",
            "--data-dir",
            "{tmp}",
        ],
        [
            "data",
            "download",
            "--pair",
            "BTC/USDT",
            "--timeframe",
            "1x",
            "--since",
            "2024-01-01",
            "--until",
            "2024-01-02",
            "--data-dir",
            "{tmp}",
            "--api-url",
            "http://127.0.0.1:9",
        ],
        [
            "data",
            "download",
            "--pair",
            "BTC/USDT",
            "--timeframe",
            "1h",
            "--since",
            "2024-01-01",
            "--until",
            "2024-01-02",
            "--data-dir",
            "{tmp}",
            "--api-url",
            "http://127.0.0.1:9",
        ],
        ["memory", "search", "--trader", "../../etc/passwd", "--query", "q"],
        ["memory", "search", "--trader", "alice", "--query", "q", "--as-of", "1652918400000"],
        ["memory", "search", "--trader", "alice", "--query", "q", "--method", "magic"],
        ["persona", "show", "--trader", "0xabc", "--fills", "{tmp}/missing.csv"],
        [
            "backtest",
            "--pair",
            "BTC/USDT",
            "--timeframe",
            "1h",
            "--data-dir",
            "{tmp}",
            "--out",
            "{tmp}/o",
            "--start",
            "2022-05-10",
            "--end",
            "2022-05-01",
        ],
    ],
    ids=[
        "download-day-first-since",
        "download-bad-timeframe",
        "download-unreachable",
        "search-hostile-trader",
        "search-epoch-ms-as-of",
        "search-bad-method",
        "persona-missing-file",
        "backtest-start-after-end",
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    args: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SENTINEL_STORE__PATH", str(tmp_path / "khala"))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, err = run_cli(monkeypatch, capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("sentinel: error:"), err
    if "../../etc/passwd" in args:  # named as the option, not as a field inside
        assert "--trader: not a valid trader id" in lines[0], err
