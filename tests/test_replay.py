"""Trade-history replay: the persona evolves day by day; the final profile equals a full
build on the same fills; big wins/losses become episodes as the clock passes them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pandas as pd

from backend.compose import build_memory_system
from backend.config import load_settings
from backend.data import load_hyperliquid_fills
from backend.replay import replay_trades
from tests.conftest import StoreFactory
from tests.sentinel_cli import sentinel

TRADER = "0x513b8629fe877bb581bf244e326a047b249c4ff1"


def test_replay_evolves_persona_and_matches_full_build(
    make_store: StoreFactory, shared_data: Path
) -> None:
    fills = load_hyperliquid_fills(shared_data / "trades" / "hyperliquid_fills.csv")
    settings = load_settings()
    until = pd.Timestamp("2025-01-15", tz="UTC").to_pydatetime()
    with build_memory_system(settings, store=make_store()) as system:
        result = replay_trades(
            system, fills, trader_id=TRADER, detectors=settings.memory.detectors, until=until
        )
        versions = result.versions["version"].tolist()
        assert versions == sorted(versions) and len(versions) == result.versions.shape[0] > 3
        assert (pd.to_datetime(result.versions["as_of"], utc=True) <= until).all()
        assert set(result.changes["action"]) <= {"ADD", "UPDATE", "IGNORE"}
        assert all(e.occurred_at <= until for e in result.episodes)
        own = [f for f in fills if f.trader_id == TRADER and f.datetime <= until]
        # the same replay again on the same store, then a longer one: resumed, not
        # refused (a reviewer's re-run, and an interrupted replay, had been refused)
        again = replay_trades(
            system, fills, trader_id=TRADER, detectors=settings.memory.detectors, until=until
        )
        assert again.resumed_days == again.days == result.days
        assert again.versions.equals(result.versions) and again.profile == result.profile
        later = pd.Timestamp("2025-02-15", tz="UTC").to_pydatetime()  # two more days
        longer = replay_trades(
            system, fills, trader_id=TRADER, detectors=settings.memory.detectors, until=later
        )
        assert longer.resumed_days == result.days < longer.days
        first = longer.versions.iloc[: len(result.versions)].astype(object)  # None ~ NaN
        assert first.where(first.notna(), None).equals(
            result.versions.astype(object).where(result.versions.notna(), None)
        )
        own_later = [f for f in fills if f.trader_id == TRADER and f.datetime <= later]
    # rebuilt on throwaway stores (a durable store of this test holds the replay's data)
    with build_memory_system(settings.throwaway()) as other:
        rebuilt = other.persona.build_from_fills(TRADER, own, as_of=until)
    with build_memory_system(settings.throwaway()) as other:
        rebuilt_later = other.persona.build_from_fills(TRADER, own_later, as_of=later)
    assert result.profile is not None and longer.profile is not None
    assert {k: a.value for k, a in result.profile.attributes.items()} == {
        k: a.value for k, a in rebuilt.attributes.items()
    }
    assert {k: a.value for k, a in longer.profile.attributes.items()} == {
        k: a.value for k, a in rebuilt_later.attributes.items()
    }


def test_replay_trades_cli_writes_the_timeline(tmp_path: Path, shared_data: Path) -> None:
    env = {**os.environ, "SENTINEL_EMBEDDING__PROVIDER": "hashing"}
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sentinel(),
            "replay-trades",
            "--trader",
            "0x083384f897ee0f19899168e3b1bec365f52a9012",
            "--fills",
            str(shared_data / "trades" / "hyperliquid_fills.csv"),
            "--out",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["fills"] == 1400 and summary["versions"] >= 2
    # 18 closing trades: the big win/loss detector judges none, and says so
    assert summary["closing_trades"] < 20 and summary["big_wins"] == 0
    assert summary["warning"].startswith("big wins and losses not detected")
    for name in (
        "persona_timeline.csv",
        "persona_versions.csv",
        "persona_timeline.png",
        "episodes.jsonl",
    ):
        assert (out / name).stat().st_size > 0 or name == "episodes.jsonl"
    assert (out / "persona_timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run(
        [
            sentinel(),
            "replay-trades",
            "--trader",
            "nobody",
            "--fills",
            str(shared_data / "trades" / "hyperliquid_fills.csv"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert bad.returncode == 2 and "no fills for trader 'nobody'" in bad.stderr


def test_bad_input_is_refused_before_a_store_is_written(shared_data: Path, tmp_path: Path) -> None:
    """A trader without fills up to --until, or an --out that is a file, ends in one line
    (exit 2) before the store at --store-path is created, let alone written."""
    fills = str(shared_data / "trades" / "hyperliquid_fills.csv")
    trader = "0x513b8629fe877bb581bf244e326a047b249c4ff1"
    store = tmp_path / "store"
    taken = tmp_path / "taken"
    taken.write_text("a file")
    env = {**os.environ, "SENTINEL_EMBEDDING__PROVIDER": "hashing"}
    cases = [
        (["--until", "2020-01-01", "--out", str(tmp_path / "out")], "'until': no fill of trader"),
        (["--out", str(taken)], "a file is there, not a directory"),
    ]
    for extra, said in cases:
        proc = subprocess.run(
            [sentinel(), "replay-trades", "--trader", trader, "--fills", fills,
             "--store-path", str(store), *extra],
            capture_output=True, text=True, timeout=300, env=env,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        (line,) = proc.stderr.splitlines()
        assert said in line and "Traceback" not in proc.stderr
        assert not store.exists()
