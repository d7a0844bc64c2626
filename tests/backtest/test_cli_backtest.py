"""The backtest command contract, with a test maker factory (the real manager is elsewhere)."""

from __future__ import annotations

import gzip
import html
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

import backend.cli
import backend.cli.backtest as cli_backtest
from backend.backtest.models import DecisionMaker
from backend.cli.backtest import backtest, run_backtest_command
from backend.config import Settings, load_settings
from backend.data import Fill, OHLCVFrame
from backend.errors import ConfigError, DataError, StoreError
from tests.backtest._makers import SmaCrossMaker
from tests.sentinel_cli import sentinel

CONTRACT_KEYS = {"total_return", "sharpe", "max_drawdown", "n_trades", "n_decisions"}
RUN_FILES = ("metrics.json", "trades.csv", "decisions.jsonl", "report.html")
ARGS = ["--pair", "BTC/USDT", "--timeframe", "1h", "--start", "2022-01-01", "--end", "2022-03-01"]


class Factory:
    """Records how it was called; builds an SmaCrossMaker."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.closed = 0

    def __call__(
        self,
        settings: Settings,
        *,
        ohlcv: OHLCVFrame,
        data_dir: Path,
        memory: bool,
        policy: str,
        store_path: Path | None,
        fills: Sequence[Fill] = (),
    ) -> tuple[DecisionMaker, Callable[[], None]]:
        self.calls.append(
            {"settings": settings, "rows": len(ohlcv.frame), "data_dir": data_dir,
             "memory": memory, "policy": policy, "store_path": store_path, "fills": fills}
        )  # fmt: skip

        def close() -> None:
            self.closed += 1

        return SmaCrossMaker(), close


@pytest.fixture
def market(shared_data: Path) -> Path:
    return shared_data / "market" / "binance"


def test_run_backtest_command_writes_the_run(tmp_path: Path, market: Path) -> None:
    factory = Factory()
    result = run_backtest_command(
        load_settings(),
        pair="BTC/USDT",
        timeframe="1h",
        start=datetime(2022, 1, 1, tzinfo=UTC),
        end=datetime(2022, 3, 1, tzinfo=UTC),
        data_dir=market,
        out=tmp_path / "run",
        memory=False,
        policy="rule",
        maker_factory=factory,
    )
    for name in RUN_FILES:
        assert (tmp_path / "run" / name).is_file()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics) >= CONTRACT_KEYS
    assert metrics["n_decisions"] == 59 * 24 == len(result.equity)
    assert result.equity.index[0] == datetime(2022, 1, 1, 1, tzinfo=UTC)
    assert result.equity.index[-1] == datetime(2022, 3, 1, tzinfo=UTC)
    (call,) = factory.calls
    assert call["memory"] is False and call["policy"] == "rule"
    assert call["data_dir"] == market.parent.parent  # the data root (news/, trades/)
    assert call["settings"].agent.memory is False and factory.closed == 1
    page = (tmp_path / "run" / "report.html").read_text()
    assert "big move" in page and "risk_appetite" in page  # events and persona from the maker


class _StoreGoneMaker(SmaCrossMaker):
    """A maker whose store fails when the report reads the persona timeline."""

    def persona_timeline(self) -> pd.DataFrame:
        raise StoreError("chroma server at 127.0.0.1:1: connection refused")


def test_a_store_failing_at_the_persona_timeline_still_writes_the_run(
    tmp_path: Path, market: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A reviewer's store failed when the finished run read the persona timeline for the
    report: exit 2 and none of the run's files. The run is written, the report says what
    it went without."""

    def factory(settings: Settings, **_: Any) -> tuple[DecisionMaker, Callable[[], None]]:
        return _StoreGoneMaker(), lambda: None

    run_backtest_command(
        load_settings(), pair="BTC/USDT", timeframe="1h",
        start=datetime(2022, 1, 1, tzinfo=UTC), end=datetime(2022, 1, 8, tzinfo=UTC),
        data_dir=market, out=tmp_path / "run", memory=False, policy="rule",
        maker_factory=factory,
    )  # fmt: skip
    for name in RUN_FILES:
        assert (tmp_path / "run" / name).is_file()
    page = (tmp_path / "run" / "report.html").read_text()
    assert "persona timeline not written: the memory store failed" in page
    assert "connection refused" in caplog.text


def test_bad_options_are_config_errors(tmp_path: Path, market: Path) -> None:
    common: dict[str, Any] = {
        "pair": "BTC/USDT", "timeframe": "1h", "data_dir": market, "out": tmp_path,
        "memory": True, "maker_factory": Factory(),
    }  # fmt: skip
    with pytest.raises(ConfigError, match="--policy"):
        run_backtest_command(load_settings(), start=None, end=None, policy="magic", **common)
    with pytest.raises(ConfigError, match="--start"):
        run_backtest_command(
            load_settings(),
            start=datetime(2022, 3, 1, tzinfo=UTC),
            end=datetime(2022, 1, 1, tzinfo=UTC),
            policy="rule",
            **common,
        )
    # an --out that cannot take the run's files is refused before the run, not after it
    (tmp_path / "file").write_text("x")
    blocked = tmp_path / "blocked"
    (blocked / "report.html").mkdir(parents=True)
    for out, problem in ((tmp_path / "file", "a file is there"),
                         (blocked, "report.html is a directory"),
                         # under a file: it was refused by the run's last write
                         (tmp_path / "file" / "sub", "files: .*file is not a dir")):  # fmt: skip
        factory = Factory()
        with pytest.raises(ConfigError, match=problem):
            run_backtest_command(
                load_settings(), start=None, end=None, policy="rule",
                **{**common, "out": out, "maker_factory": factory},
            )  # fmt: skip
        assert factory.calls == []
    assert sorted(p.name for p in blocked.iterdir()) == ["report.html"]  # nothing half-written
    factory = Factory()  # a --data-root given that is not there: no run without its news
    with pytest.raises(ConfigError, match=r"--data-root .*nowhere: not a directory"):
        run_backtest_command(
            load_settings(), start=None, end=None, policy="rule",
            **{**common, "out": tmp_path / "run", "maker_factory": factory},
            data_root=tmp_path / "nowhere",
        )  # fmt: skip
    assert factory.calls == [] and not (tmp_path / "run").exists()
    with pytest.raises(DataError, match=r"BTC_USDT-1h\.csv\.gz.*no BTC/USDT 1h candles"):
        run_backtest_command(
            load_settings(),
            start=datetime(2030, 1, 1, tzinfo=UTC),
            end=None,
            policy="rule",
            **common,
        )


def damaged_dir(tmp_path: Path) -> Path:
    rows = "date,open,high,low,close,volume\n2022-01-01T00:00:00Z,1,2,0.5,1.5,10\n"
    rows += "2022-01-01T01:00:00Z,1,2,0.5,oops,10\n"
    path = tmp_path / "data" / "BTC_USDT-1h.csv.gz"
    path.parent.mkdir()
    path.write_bytes(gzip.compress(rows.encode())[:-12])  # truncated gzip
    return path.parent


def test_damaged_data_file_is_a_data_error_naming_it(tmp_path: Path) -> None:
    factory = Factory()
    with pytest.raises(DataError) as info:
        run_backtest_command(
            load_settings(), pair="BTC/USDT", timeframe="1h", start=None, end=None,
            data_dir=damaged_dir(tmp_path), out=tmp_path / "out", memory=True, policy="rule",
            maker_factory=factory,
        )  # fmt: skip
    assert "BTC_USDT-1h.csv.gz" in str(info.value) and "\n" not in str(info.value)
    assert factory.calls == [] and not (tmp_path / "out").exists()


def scratch_app() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False)

    @app.callback()
    def _root() -> None:
        backend.cli._common.state.settings = None

    app.command("backtest")(backtest)
    return app


def test_typer_command_json_and_text(
    tmp_path: Path, market: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    factory = Factory()
    monkeypatch.setattr(cli_backtest, "default_maker_factory", lambda: factory)
    app = scratch_app()
    args = ["backtest", *ARGS, "--data-dir", str(market), "--out", str(tmp_path / "j")]
    result = CliRunner().invoke(app, [*args, "--json", "--memory", "off", "--policy", "rule"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(metrics) >= CONTRACT_KEYS and metrics["n_decisions"] == 1416
    assert factory.calls[-1]["memory"] is False and result.stderr == ""

    out = tmp_path / "t"
    args = ["backtest", *ARGS, "--data-dir", str(market), "--out", str(out), "--memory", "on"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "report.html" in result.stdout and "total return" in result.stdout
    assert factory.calls[-1]["memory"] is True
    assert all((out / name).is_file() for name in RUN_FILES)

    bad = CliRunner().invoke(app, ["backtest", *args[1:], "--memory", "maybe"])
    assert isinstance(bad.exception, ConfigError) and "--memory" in str(bad.exception)

    # --trader: the memory of a trader whose persona another command built in the store
    # (issue 14's recall works "on a store that already holds market episodes and a
    # persona of the same trader"; it had taken SENTINEL_AGENT__TRADER_ID)
    trader = "0x513b8629fe877bb581bf244e326a047b249c4ff1"
    result = CliRunner().invoke(app, [*args, "--trader", trader])
    assert result.exit_code == 0, result.output
    assert factory.calls[-1]["settings"].agent.trader_id == trader
    bad = CliRunner().invoke(app, [*args, "--trader", "Bob Smith"])
    assert isinstance(bad.exception, ConfigError) and "--trader" in str(bad.exception)


@pytest.mark.slow
def test_typer_command_with_a_traders_fills(
    tmp_path: Path, market: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    factory = Factory()
    monkeypatch.setattr(cli_backtest, "default_maker_factory", lambda: factory)
    app = scratch_app()
    out = tmp_path / "t"
    args = ["backtest", *ARGS, "--data-dir", str(market), "--out", str(out), "--memory", "on"]
    trader = "0x513b8629fe877bb581bf244e326a047b249c4ff1"
    # --fills: the trader's fills, learned by the persona as known at each bar (a
    # reviewer's --trader alone was the default run to the byte, with nothing said)
    fills = market.parent.parent / "trades" / "hyperliquid_fills.csv"
    bad = CliRunner().invoke(app, [*args, "--fills", str(fills)])
    assert isinstance(bad.exception, ConfigError) and "--fills needs --trader" in str(bad.exception)
    result = CliRunner().invoke(app, [*args, "--trader", "0x513B86", "--fills", str(fills)])
    assert result.exit_code == 0, result.output
    call = factory.calls[-1]
    assert call["settings"].agent.trader_id == trader  # the prefix, resolved
    assert len(call["fills"]) > 100 and {f.trader_id for f in call["fills"]} == {trader}
    # 2022 is before this trader's first fill: said, in the report too
    assert "no fill of 0x513b" in (out / "report.html").read_text()
    # memory off reads no stored persona: said (a reviewer's run traded an excluded coin)
    off = CliRunner().invoke(app, [*args, "--trader", trader, "--memory", "off"])
    assert off.exit_code == 0, off.output
    assert "memory off: the stored persona of trader" in (out / "report.html").read_text()


@pytest.mark.slow
def test_a_trader_the_store_does_not_know_is_said(tmp_path: Path, market: Path) -> None:
    """``--trader`` on a store with no memory of that trader: the run's persona is the
    seed note alone, which the report and the log now say (the real builder)."""
    run_backtest_command(
        load_settings(), pair="BTC/USDT", timeframe="1h",
        start=datetime(2022, 1, 1, tzinfo=UTC), end=datetime(2022, 1, 3, tzinfo=UTC),
        data_dir=market, out=tmp_path / "run", memory=True, policy="rule",
        trader_named=True,
    )  # fmt: skip
    page = (tmp_path / "run" / "report.html").read_text()
    assert "no memory of trader agent in the store before the first bar" in page


def test_main_prints_one_line_and_exits_2_for_a_damaged_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli_backtest, "default_maker_factory", lambda: Factory())
    monkeypatch.setattr(backend.cli, "app", scratch_app())
    data = damaged_dir(tmp_path)
    argv = ["sentinel", "backtest", *ARGS, "--data-dir", str(data), "--out", str(tmp_path / "o")]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        backend.cli.main()
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sentinel: error:")
    assert str(data / "BTC_USDT-1h.csv.gz") in lines[0]


def test_the_real_builder_is_the_composition_root_s() -> None:
    from backend.compose import build_trader_manager

    assert cli_backtest.default_maker_factory() is build_trader_manager


def test_a_window_reaching_past_the_data_is_said_in_the_report(
    tmp_path: Path, market: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``--end`` after the last candle: the run ends at the data, and says so."""
    result = run_backtest_command(
        load_settings(), pair="BTC/USDT", timeframe="1d",
        start=datetime(2025, 9, 1, tzinfo=UTC), end=datetime(2026, 1, 1, tzinfo=UTC),
        data_dir=market, out=tmp_path / "run", memory=False, policy="rule",
        maker_factory=Factory(),
    )  # fmt: skip
    last_close = result.metrics.end.isoformat()
    said = f"--end 2026-01-01T00:00:00+00:00 is after the data (BTC/USDT 1d ends at {last_close})"
    assert said in caplog.text
    assert said in (tmp_path / "run" / "report.html").read_text()


def test_a_window_the_news_does_not_cover_is_said_in_the_report(
    tmp_path: Path, market: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A reviewer's 2024 runs had no headline at all (the file ends in 2022-07), and
    neither the report nor the log said so."""
    run_backtest_command(
        load_settings(), pair="BTC/USDT", timeframe="1h",
        start=datetime(2024, 11, 1, tzinfo=UTC), end=datetime(2024, 11, 8, tzinfo=UTC),
        data_dir=market, out=tmp_path / "run", memory=False, policy="rule",
        maker_factory=Factory(),
    )  # fmt: skip
    said = "headlines (news shocks): none in the run's 2024-11-01..2024-11-07"
    page = (tmp_path / "run" / "report.html").read_text()
    assert said in caplog.text and html.escape(said) in page


def test_missing_news_files_are_said_and_recorded(
    tmp_path: Path, shared_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from backend.cli._common import news_inputs
    from backend.config import load_settings

    cfg = load_settings()
    with caplog.at_level("WARNING", logger="backend.cli"):
        assert news_inputs(tmp_path, cfg) == {"headlines": None, "fear_greed": None}
    assert [r.getMessage().split(" at ")[0] for r in caplog.records] == [
        "no headlines file", "no fear_greed file",
    ]  # fmt: skip
    found = news_inputs(shared_data, cfg)
    assert all(found.values()) and Path(str(found["headlines"])).is_file()


def test_an_unknown_policy_is_one_line_on_stderr_and_exit_2(tmp_path: Path) -> None:
    """The real command: its error is the only output, one line (the progress bar, never
    started, had printed an empty line before it)."""
    done = subprocess.run(
        [sentinel(), "backtest", *ARGS, "--policy", "foo", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "sentinel: error: --policy: expected rule or llm, got 'foo'\n"
    assert not (tmp_path / "run").exists()
