"""``sentinel persona show``: the JSON contract, the table, and one-line errors (exit 2).

The subprocess tests run the installed ``sentinel`` script once ``backend.cli`` registers
``persona_app``; until then the same ``main()`` wrapper runs with the sub-app added."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import backend.cli
from backend.cli.persona import persona_app
from tests.agents.conftest import ALTS_SPOT, BTC_LONG_HF, ETH_SOL_SHORT
from tests.sentinel_cli import sentinel as warm_sentinel

SENTINEL = warm_sentinel()
REGISTERED = any(group.typer_instance is persona_app for group in backend.cli.app.registered_groups)
_WRAPPER = (
    "import sys, backend.cli as c; from backend.cli.persona import persona_app as p; "
    "c.app.add_typer(p, name='persona'); sys.argv[0] = 'sentinel'; c.main()"
)


def sentinel(*args: str) -> subprocess.CompletedProcess[str]:
    command = [str(SENTINEL)] if REGISTERED else [sys.executable, "-c", _WRAPPER]
    return subprocess.run(
        [*command, "persona", "show", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_json_contract_through_the_command_line(fills_path: Path) -> None:
    result = sentinel("--trader", BTC_LONG_HF, "--fills", str(fills_path), "--json")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert data["trader_id"] == BTC_LONG_HF and data["version"] == 1
    assert data["as_of"] == "2025-05-01T01:37:00+00:00"  # the end of the last fill's minute
    attrs = data["attributes"]
    for name in ("preferred_assets", "long_share", "risk_tolerance"):
        assert set(attrs[name]) == {"value", "confidence", "evidence_count"}
    assert attrs["preferred_assets"]["value"][0] == "BTC"
    assert 0.5 < attrs["long_share"]["value"] <= 1
    assert attrs["risk_tolerance"]["value"] in ("conservative", "moderate", "aggressive")


def test_damaged_file_is_one_line_naming_it_and_exit_2(fills_path: Path, tmp_path: Path) -> None:
    rows = fills_path.read_text(encoding="utf-8").splitlines()[:30]
    cells = rows[5].split(",")
    cells[2] = "12..5"  # Execution Price
    rows[5] = ",".join(cells)
    damaged = tmp_path / "damaged_fills.csv"
    damaged.write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = sentinel("--trader", ALTS_SPOT, "--fills", str(damaged), "--json")
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sentinel: error:")
    assert "damaged_fills.csv" in lines[0] and "row 6" in lines[0]
    assert "Traceback" not in result.stderr


def test_unknown_trader_is_an_error_naming_the_file(fills_path: Path) -> None:
    result = sentinel("--trader", "0xnobody", "--fills", str(fills_path))
    assert result.returncode == 2
    assert "hyperliquid_fills.csv" in result.stderr and "0xnobody" in result.stderr


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    root = typer.Typer()
    root.add_typer(persona_app, name="persona")
    return root


def test_json_for_each_trader_and_as_of(app: typer.Typer, fills_path: Path) -> None:
    runner = CliRunner()
    out = {}
    for trader in (ETH_SOL_SHORT, ALTS_SPOT):
        args = ["persona", "show", "--trader", trader, "--fills", str(fills_path), "--json"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        out[trader] = json.loads(result.stdout)["attributes"]
    assert out[ETH_SOL_SHORT]["preferred_assets"]["value"][:2] == ["ETH", "SOL"]
    assert out[ETH_SOL_SHORT]["long_share"]["value"] < 0.5
    assert out[ALTS_SPOT]["long_share"]["value"] > 0.5
    args = ["persona", "show", "--trader", ALTS_SPOT, "--fills", str(fills_path)]
    early = runner.invoke(app, [*args, "--as-of", "2025-01-01", "--json"])
    data = json.loads(early.stdout)
    assert data["as_of"] == "2025-01-01T00:00:00+00:00"
    count = data["attributes"]["preferred_assets"]["evidence_count"]
    assert 0 < count < out[ALTS_SPOT]["preferred_assets"]["evidence_count"]


def test_table_output(app: typer.Typer, fills_path: Path) -> None:
    args = ["persona", "show", "--trader", ETH_SOL_SHORT, "--fills", str(fills_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for needle in ("preferred_assets", "ETH, SOL", "long_share", "risk_tolerance", "v1"):
        assert needle in result.stdout


def test_table_prints_markup_in_the_fills_as_it_is(
    app: typer.Typer, fills_path: Path, tmp_path: Path
) -> None:
    """Coins are the export's text, never rich markup: ``[bold]X`` is printed as it is
    (a closing tag cannot be one: ``/`` ends a coin's base asset)."""
    rows = fills_path.read_text(encoding="utf-8").splitlines()
    mine = [row for row in rows[1:] if row.startswith(ALTS_SPOT + ",")][:40]
    odd = []
    for i, row in enumerate(mine):
        cells = row.split(",")
        cells[1] = ("[bold]X", "[i]Y")[i % 2]  # Coin
        odd.append(",".join(cells))
    export = tmp_path / "odd_fills.csv"
    export.write_text("\n".join([rows[0], *odd]) + "\n", encoding="utf-8")
    result = CliRunner().invoke(
        app, ["persona", "show", "--trader", ALTS_SPOT, "--fills", str(export)]
    )
    assert result.exit_code == 0, result.output
    for coin in ("[bold]X", "[i]Y"):
        assert coin in result.stdout, result.stdout


@pytest.mark.slow
def test_a_future_as_of_and_a_missing_config_are_one_line_and_exit_2(
    fills_path: Path, tmp_path: Path
) -> None:
    """A reviewer's ``--as-of 2030-01-01`` printed "persona v1 as of 2030-01-01", and a
    ``--config`` that does not exist was ignored (exit 0)."""
    future = sentinel("--trader", ALTS_SPOT, "--fills", str(fills_path), "--as-of", "2030-01-01")
    assert future.returncode == 2 and future.stdout == ""
    assert future.stderr.strip() == (
        "sentinel: error: --as-of 2030-01-01T00:00:00+00:00 is in the future"
    )
    missing = tmp_path / "nowhere.yaml"
    bad = subprocess.run(
        [str(SENTINEL), "--config", str(missing), "persona", "show", "--trader", ALTS_SPOT,
         "--fills", str(fills_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "nowhere.yaml: config file not found" in bad.stderr
