"""The ``sentinel`` command, run as a real subprocess: the installed console script, and
the same entry point forked by the session's warm fork server (:mod:`tests.sentinel_cli`)."""

from __future__ import annotations

import json
import os
import runpy
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from backend.data import load_ohlcv
from tests.sentinel_cli import REAL_SENTINEL, sentinel

SENTINEL = sentinel()


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SENTINEL), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.slow  # 3-7 s: it imports every command group
def test_help_lists_the_commands() -> None:
    """The installed console script itself; the warm command the other tests run
    (:mod:`tests.sentinel_cli`) answers exactly the same."""
    real = subprocess.run([REAL_SENTINEL, "--help"], capture_output=True, text=True, timeout=300)
    assert real.returncode == 0
    for command in ("demo", "data", "memory", "persona", "backtest", "replay-trades"):
        assert command in real.stdout
    warm = run("--help")
    assert (warm.returncode, warm.stdout, warm.stderr) == (0, real.stdout, real.stderr)


def test_no_command_help_shows_docstring_markup() -> None:
    """A reviewer's finding: ``import-chat --help`` printed reST backticks (the help is
    the command's docstring). Every command's help is read as a user reads it."""
    import typer

    from backend.cli import app

    def commands(group: Any, path: str) -> list[tuple[str, Any]]:
        found: list[tuple[str, Any]] = []
        for name, command in group.commands.items():  # typer's own (vendored) click
            found.append((f"{path} {name}", command))
            if hasattr(command, "commands"):
                found += commands(command, f"{path} {name}")
        return found

    every = commands(typer.main.get_command(app), "sentinel")
    assert len(every) > 20
    for name, command in every:
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        marked = [t for t in texts if "``" in t or ":meth:" in t or ":class:" in t]
        assert not marked, (name, marked)


@pytest.mark.parametrize("module", ["backend", "backend.entry"])
@pytest.mark.filterwarnings("ignore:'backend.entry' found in sys.modules:RuntimeWarning")
def test_python_m_runs_the_same_command(
    module: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m backend`` / ``python -m backend.entry`` (the second one did nothing):
    the module run as ``__main__`` as ``-m`` runs it, in this process (a new interpreter
    costs 3-7 s of imports; the console script's own start is the test above)."""
    monkeypatch.setattr(sys, "argv", [module, "memory", "--help"])
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exit_:  # help returns; an error exits
        assert exit_.code in (0, None), capsys.readouterr().err
    assert "import-chat" in capsys.readouterr().out


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run(
        "data", "check", "--pair", "XRP/USDT", "--timeframe", "1h", "--data-dir", str(tmp_path)
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sentinel: error:")
    assert "XRP_USDT-1h" in lines[0] and "Traceback" not in result.stderr
    future = run("mcp", "--trader", "alice", "--store-path", str(tmp_path), "--as-of", "2099-01-01")
    assert future.returncode == 2 and "--as-of 2099-01-01 is in the future" in future.stderr
    debug = run(
        "--debug",
        "data",
        "check",
        "--pair",
        "XRP/USDT",
        "--timeframe",
        "1h",
        "--data-dir",
        str(tmp_path),
    )
    assert debug.returncode == 2 and "Traceback" in debug.stderr  # still a user error
    assert debug.stderr.splitlines()[-1] == lines[0]


def test_mcp_on_a_directory_with_no_store_is_refused_unless_created(tmp_path: Path) -> None:
    """A mistyped --store-path served an empty memory (every recall answered nothing)."""
    typo = run("mcp", "--trader", "alice", "--store-path", str(tmp_path / "stroe"))
    assert typo.returncode == 2 and len(typo.stderr.strip().splitlines()) == 1
    assert "no memory store there (--create starts an empty one)" in typo.stderr
    assert not (tmp_path / "stroe").exists()


@pytest.mark.data
@pytest.mark.slow  # ~5 s: the first conversation of the LoCoMo eval
def test_ctrl_c_is_said_and_exits_130(tmp_path: Path, shared_data: Path) -> None:
    """An interrupted command must not read as a success to the script that ran it:
    typer (not standalone) returns Ctrl-C as the code 130 instead of raising, and that
    code had been dropped (exit 0, nothing said). The LoCoMo eval is interrupted once it
    has said its first conversation is ingested: inside the command, its modules loaded (an
    interrupt inside a native module's import can surface as another error: see
    ``test_an_interrupt_inside_an_import_is_still_aborted``), with 20 s and more of work
    left (the embedding cache off; the demo, used before, has 2 s left after its first
    line). The command starts with SIGINT at its default, as at a terminal: a suite run
    as a background job has it ignored, and so had every command (the demo ran to its
    end, exit 0; the eval ran on)."""
    env = {**os.environ, "SENTINEL_EMBEDDING__CACHE_DIR": "null"}
    proc = subprocess.Popen(
        [str(SENTINEL), "eval", "locomo", "--data", str(shared_data / "locomo" / "locomo_dev.json"),
         "--out", str(tmp_path / "locomo.json")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        # as at a terminal, whatever started the suite (a background job has it ignored)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if ": ingested " in line:
                break
        else:
            pytest.fail("the eval ended before it ingested a conversation")
        assert proc.poll() is None, "the eval ended before the interrupt"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.splitlines()[-1] == "sentinel: aborted" and "Traceback" not in err
    assert not (tmp_path / "locomo.json").exists()  # nothing half-written


def test_an_interrupt_inside_an_import_is_still_aborted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C while a native extension initialises can reach the command as that
    import's error (seen once in a loaded suite: ``ImportError: initialization failed``,
    exit 1 "internal error"): an error caused by the interrupt is still the interrupt."""
    from backend.cli import _app

    def interrupted(**_: object) -> int:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise ImportError("initialization failed") from exc

    monkeypatch.setattr(_app, "app", interrupted)
    monkeypatch.setattr("sys.argv", ["sentinel", "demo"])
    with pytest.raises(SystemExit) as ended:
        _app.main()
    assert ended.value.code == 130
    assert capsys.readouterr().err == "sentinel: aborted\n"


def test_an_interrupt_while_the_cli_imports_is_aborted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The console script (``backend.entry:main``) imports the CLI itself: Ctrl-C during
    those seconds of imports is ``sentinel: aborted`` and 130, not a traceback."""
    import builtins

    from backend import entry

    real_import = builtins.__import__

    def importing(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "backend.cli":
            raise KeyboardInterrupt
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", importing)
    with pytest.raises(SystemExit) as ended:
        entry.main()
    assert ended.value.code == 130
    assert capsys.readouterr().err == "sentinel: aborted\n"


def test_mistyped_command_or_option_is_one_line_and_exit_2() -> None:
    for args, problem in (
        (("memory", "import-chaat"), "No such command 'import-chaat'"),
        (("backtest", "--nope"), "No such option: --nope"),
        (("memory", "recall", "--trader", "t", "--queries", "q", "--top-k", "0"), "--top-k"),
        (("memory", "recall", "--trader", "t", "--queries", "q", "--top-k", "x"), "--top-k"),
    ):
        result = run(*args)
        assert result.returncode == 2, result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("sentinel: error: ") and problem in line
        assert f"(see: sentinel {args[0]}" in line and "internal error" not in line
    group = run("memory")  # a group given no command: its help, and no error line
    assert "Usage: sentinel memory" in group.stdout and group.stderr == ""


def test_memory_search_refuses_a_blank_query_and_a_kind_no_record_can_have() -> None:
    """A reviewer's finding: ``--query ' '`` was ranked on nothing and ``--kind 'Bad
    Kind'`` (no record can have it) answered an empty table, both as if searched."""
    for option, value, problem in (
        ("--query", " ", "--query: empty"),
        ("--kind", "Bad Kind", "--kind: 'Bad Kind' is no record kind"),
    ):
        args = {"--query": "celsius", "--kind": "news", option: value}
        result = run("memory", "search", "--trader", "t", *[x for kv in args.items() for x in kv])
        assert result.returncode == 2 and result.stdout == ""
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("sentinel: error: ") and problem in line, line


def test_bad_config_value_fails_at_start_naming_the_key(tmp_path: Path) -> None:
    result = run(
        "memory", "search", "--trader", "t", "--query", "q", env={"SENTINEL_STORE__MODE": "cloud"}
    )
    assert result.returncode == 2
    assert "store.mode" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_data_check_reads_its_config(tmp_path: Path) -> None:
    """``data check`` reads no setting, yet a bad ``--config`` is refused (one line, exit
    2) as by every other command, instead of being ignored; a good one checks the file."""
    (tmp_path / "BTC_USDT-1h.csv").write_text(
        "date,open,high,low,close,volume\n"
        "2024-01-01T00:00:00Z,1,2,0.5,1.5,10\n"
        "2024-01-01T01:00:00Z,1.5,2,1,1.8,12\n"
    )
    check = ("data", "check", "--pair", "BTC/USDT", "--timeframe", "1h",
             "--data-dir", str(tmp_path), "--json")  # fmt: skip
    bad = tmp_path / "bad.yaml"
    bad.write_text("store:\n  mode: cloud\n", encoding="utf-8")
    refused = run("--config", str(bad), *check)
    assert (refused.returncode, refused.stdout) == (2, ""), refused.stdout
    lines = refused.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sentinel: error:") and "store.mode" in lines[0]
    good = tmp_path / "good.yaml"
    good.write_text("store:\n  mode: embedded\n", encoding="utf-8")
    checked = run("--config", str(good), *check)
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["rows"] == 2


def test_damaged_file_names_file_and_row(tmp_path: Path) -> None:
    (tmp_path / "BTC_USDT-1h.csv").write_text(
        "date,open,high,low,close,volume\n"
        "2024-01-01T00:00:00Z,1,2,0.5,1.5,10\n"
        "2024-01-01T01:00:00Z,1,abc,0.5,1.5,10\n"
    )
    result = run(
        "data", "check", "--pair", "BTC/USDT", "--timeframe", "1h", "--data-dir", str(tmp_path)
    )
    assert result.returncode == 2
    assert "BTC_USDT-1h.csv" in result.stderr and "row 3" in result.stderr
    assert "high" in result.stderr


def test_data_download_through_loopback_binance(
    tmp_path: Path, binance_loopback: str, shared_data: Path
) -> None:
    result = run(
        "data",
        "download",
        "--exchange",
        "binance",
        "--pair",
        "BTC/USDT",
        "--timeframe",
        "1h",
        "--since",
        "2024-01-01",
        "--until",
        "2024-01-15",
        "--data-dir",
        str(tmp_path),
        "--api-url",
        binance_loopback,
        "--json",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["rows"] == 14 * 24
    written = load_ohlcv(tmp_path, "BTC/USDT", "1h").frame
    real = load_ohlcv(shared_data / "market" / "binance", "BTC/USDT", "1h").frame
    expected = real.loc["2024-01-01":"2024-01-14"]
    pd.testing.assert_frame_equal(written, expected, check_freq=False)
    check = run(
        "data",
        "check",
        "--pair",
        "BTC/USDT",
        "--timeframe",
        "1h",
        "--data-dir",
        str(tmp_path),
        "--json",
    )
    assert json.loads(check.stdout)["rows"] == 336
    # a pair in another spelling is the same file; a bad --format is refused before any
    # request (the loopback exchange would have answered)
    other = run("data", "check", "--pair", "btcusdt", "--timeframe", "1h",
                "--data-dir", str(tmp_path), "--json")  # fmt: skip
    assert json.loads(other.stdout)["rows"] == 336
    bad = run("data", "download", "--exchange", "binance", "--pair", "BTC/USDT",
              "--timeframe", "1h", "--since", "2024-01-01", "--until", "2024-01-02",
              "--data-dir", str(tmp_path / "never"), "--api-url", binance_loopback,
              "--format", "xls")  # fmt: skip
    assert bad.returncode == 2 and "--format: unknown OHLCV format 'xls'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "never").exists()
    backwards = run("data", "download", "--exchange", "binance", "--pair", "BTC/USDT",
                    "--timeframe", "1h", "--since", "2024-01-02", "--until", "2024-01-01",
                    "--data-dir", str(tmp_path / "never"),
                    "--api-url", binance_loopback)  # fmt: skip
    assert backwards.returncode == 2 and "--since 2024-01-02T00:00:00+00:00 is not before" in (
        backwards.stderr
    )
    assert len(backwards.stderr.strip().splitlines()) == 1 and not (tmp_path / "never").exists()
    # a second download keeps what the file holds (it had replaced two weeks by one day)
    more = ["data", "download", "--exchange", "binance", "--pair", "BTC/USDT", "--timeframe",
            "1h", "--since", "2024-01-15", "--until", "2024-01-16", "--data-dir", str(tmp_path),
            "--api-url", binance_loopback]  # fmt: skip
    added = run(*more, "--json")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout.strip().splitlines()[-1])["file_rows"] == 15 * 24
    now_held = load_ohlcv(tmp_path, "BTC/USDT", "1h").frame
    pd.testing.assert_frame_equal(now_held, real.loc["2024-01-01":"2024-01-15"], check_freq=False)
    # ... and never writes a second file of the pair (every reader refused the directory)
    other_format = run(*more, "--format", "json")
    assert other_format.returncode == 2, other_format.stderr
    assert "already holds BTC/USDT 1h as BTC_USDT-1h.csv.gz" in other_format.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["BTC_USDT-1h.csv.gz"]


def test_data_download_never_writes_a_candle_still_forming(tmp_path: Path) -> None:
    """A reviewer's: ``--until`` after now wrote the current hour's candle, still forming
    (as Binance serves it), as a closed one."""
    import gzip

    from tests.data.binance_server import start_binance_server

    now = pd.Timestamp.now(tz="UTC")
    hours = pd.date_range(now.floor("h") - pd.Timedelta(hours=5), now.floor("h"), freq="h")
    lines = ["date,open,high,low,close,volume"] + [
        f"{t:%Y-%m-%dT%H:%M:%SZ},100,101,99,100.5,10" for t in hours
    ]
    source = tmp_path / "srv" / "BTC_USDT-1h.csv.gz"
    source.parent.mkdir()
    source.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    server, base = start_binance_server(source)
    try:
        result = run("data", "download", "--exchange", "binance", "--pair", "BTC/USDT",
                     "--timeframe", "1h", "--since", f"{hours[0]:%Y-%m-%dT%H:%M:%SZ}",
                     "--until", "2099-01-01", "--data-dir", str(tmp_path / "out"),
                     "--api-url", base, "--json")  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stderr
    written = load_ohlcv(tmp_path / "out", "BTC/USDT", "1h").frame
    assert written.index[-1] == hours[-2]  # the last closed hour; the forming one is not


@pytest.mark.slow
def test_memory_search_reads_a_store(tmp_path: Path) -> None:
    env = {
        "SENTINEL_STORE__PATH": str(tmp_path / "khala"),
        "SENTINEL_EMBEDDING__PROVIDER": "hashing",
    }
    from datetime import UTC, datetime

    from backend.config import StoreSettings
    from backend.embeddings import HashingEmbedder
    from backend.storage import MemoryRecord, open_store

    store = open_store(StoreSettings(path=tmp_path / "khala"), HashingEmbedder())
    at = datetime(2022, 6, 13, tzinfo=UTC)
    store.upsert(
        "alice",
        [
            MemoryRecord(
                id="n1",
                trader_id="alice",
                created_at=at,
                kind="news",
                text="Celsius pauses withdrawals",
            )
        ],
        as_of=at,
    )
    store.close()
    result = run(
        "memory",
        "search",
        "--trader",
        "alice",
        "--query",
        "celsius withdrawals",
        "--as-of",
        "2022-06-14",
        "--json",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    hit = json.loads(result.stdout.strip().splitlines()[0])
    assert hit["record"]["id"] == "n1" and hit["rank"] == 1
    before = run(
        "memory",
        "search",
        "--trader",
        "alice",
        "--query",
        "celsius",
        "--as-of",
        "2022-06-12",
        "--json",
        env=env,
    )
    assert before.returncode == 0 and before.stdout.strip() == ""
    other = run("memory", "search", "--trader", "bob", "--query", "celsius", "--json", env=env)
    assert other.returncode == 0 and other.stdout.strip() == ""
    # --store-path: the same store named on the command line; a directory without one fails
    hashing = {"SENTINEL_EMBEDDING__PROVIDER": "hashing"}
    named = run("memory", "search", "--trader", "alice", "--query", "celsius", "--as-of",
                "2022-06-14", "--json", "--store-path", str(tmp_path / "khala"),
                env=hashing)  # fmt: skip
    assert named.returncode == 0 and json.loads(named.stdout.splitlines()[0])["rank"] == 1
    empty = run("memory", "search", "--trader", "alice", "--query", "celsius",
                "--store-path", str(tmp_path / "nothing"), env=hashing)  # fmt: skip
    assert empty.returncode == 2 and "no memory store there" in empty.stderr
    # without --store-path, a configured store that does not exist is not made and searched
    unmade = {**hashing, "SENTINEL_STORE__PATH": str(tmp_path / "unmade")}
    missing = run("memory", "search", "--trader", "alice", "--query", "celsius", env=unmade)
    assert missing.returncode == 2 and not (tmp_path / "unmade").exists()
    assert missing.stderr.strip() == (
        f"sentinel: error: no memory store at {tmp_path / 'unmade'} (store.path); give --store-path"
    )


def test_memory_search_prints_stored_markup_as_it_is(tmp_path: Path) -> None:
    """Without --json, a stored text is printed as it is, never read as rich markup (a
    stray closing tag had ended the command with an internal error)."""
    from datetime import UTC, datetime

    from backend.config import StoreSettings
    from backend.embeddings import HashingEmbedder
    from backend.storage import MemoryRecord, open_store

    text = "Celsius [/oops] [red]halts"
    store = open_store(StoreSettings(path=tmp_path / "khala"), HashingEmbedder())
    at = datetime(2022, 6, 13, tzinfo=UTC)
    record = MemoryRecord(id="n1", trader_id="alice", created_at=at, kind="news", text=text)
    store.upsert("alice", [record], as_of=at)
    store.close()
    result = run("memory", "search", "--trader", "alice", "--query", "celsius", "--method",
                 "bm25", "--as-of", "2022-06-14", "--store-path", str(tmp_path / "khala"),
                 env={"SENTINEL_EMBEDDING__PROVIDER": "hashing", "COLUMNS": "200"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert text in result.stdout, result.stdout


def test_memory_search_shows_an_episode_as_it_stood_at_as_of(tmp_path: Path) -> None:
    """An outcome recorded after ``--as-of`` is not shown with the episode (the store keeps
    the episode's record as last written; the search replays it as of)."""
    import json
    from datetime import UTC, datetime

    from backend.config import MemorySettings, StoreSettings
    from backend.embeddings import HashingEmbedder
    from backend.memory.episodic import EpisodicMemory
    from backend.memory.models import Episode, Outcome
    from backend.storage import open_store

    store = open_store(StoreSettings(path=tmp_path / "khala"), HashingEmbedder())
    episodic = EpisodicMemory(store, settings=MemorySettings())
    at, later = datetime(2022, 5, 10, tzinfo=UTC), datetime(2022, 5, 13, tzinfo=UTC)
    episode = Episode(id="e1", trader_id="alice", symbol="BTC/USDT", event_type="flash_crash",
                      occurred_at=at, description="LUNA crash", importance=0.3)  # fmt: skip
    episodic.add([episode], as_of=at)
    outcome = Outcome(horizon="24h", market_return=-0.25, pnl=None, resolved_at=later)
    episodic.record_outcome("alice", "e1", outcome, as_of=later)
    store.close()

    def search(as_of: str) -> Any:
        result = run("memory", "search", "--trader", "alice", "--query", "luna crash",
                     "--method", "bm25", "--as-of", as_of, "--json",
                     "--store-path", str(tmp_path / "khala"),
                     env={"SENTINEL_EMBEDDING__PROVIDER": "hashing"})  # fmt: skip
        assert result.returncode == 0, result.stderr
        (line,) = result.stdout.splitlines()
        return json.loads(line)["record"]

    then, now = search("2022-05-11"), search("2022-05-14")
    assert then["importance"] == 0.3 and json.loads(then["metadata"]["log"]) == []
    assert now["importance"] > 0.3 and "-0.25" in now["metadata"]["log"]


def test_store_path_layouts_are_recognised(tmp_path: Path) -> None:
    from backend.cli._common import settings_for_store
    from backend.config import load_settings
    from backend.errors import ConfigError

    new = settings_for_store(tmp_path / "new")  # a writer's new directory: the run layout
    assert (new.store.path, new.store.audit_path, new.working_state_file) == (
        tmp_path / "new" / "khala", tmp_path / "new" / "audit.db",
        tmp_path / "new" / "working.sqlite3",
    )  # fmt: skip
    with pytest.raises(ConfigError, match="no memory store there"):
        settings_for_store(tmp_path / "new", create=False)  # a reader never makes one
    bare = tmp_path / "bare"  # the default layout: chroma's own files in the directory
    bare.mkdir()
    (bare / "chroma.sqlite3").touch()
    got = settings_for_store(bare, create=False)
    assert (got.store.path, got.store.resolved_audit_path) == (bare, bare / "khala_audit.sqlite3")
    old = tmp_path / "old-replay"  # `replay-trades --store-path` of an older release
    (old / "khala").mkdir(parents=True)
    (old / "khala" / "khala_audit.sqlite3").touch()
    (old / "w.db").touch()
    got = settings_for_store(old, create=False)
    assert (got.store.resolved_audit_path, got.working_state_file) == (
        old / "khala" / "khala_audit.sqlite3", old / "w.db",
    )  # fmt: skip
    # and a backtest on it (Settings.with_store_dir, through the composition root) agrees:
    # it kept audit.db, and whichever ran first pinned its trail for good (a reviewer's)
    backtest = load_settings(None).offline(store_dir=old)
    assert (backtest.store.resolved_audit_path, backtest.working_state_file) == (
        old / "khala" / "khala_audit.sqlite3", old / "w.db",
    )  # fmt: skip
    # a run directory's chroma directory given instead of the run directory is the run
    # directory: one audit trail (a second one hid each side's writes from the other's caches)
    run = tmp_path / "run"
    (run / "khala").mkdir(parents=True)
    (run / "khala" / "chroma.sqlite3").touch()
    (run / "audit.db").touch()
    got = settings_for_store(run / "khala", create=False)
    assert (got.store.path, got.store.audit_path, got.working_state_file) == (
        run / "khala", run / "audit.db", run / "working.sqlite3",
    )  # fmt: skip
    placed = got.offline(store_dir=run / "khala").store  # `backtest --store-path RUN/khala`
    assert (placed.path, placed.audit_path) == (run / "khala", run / "audit.db")
    # store.path itself (the default .sentinel/khala) is a bare chroma directory, new or not
    from backend.cli._common import store_settings
    from backend.config import load_settings

    cfg = load_settings()
    cfg = cfg.model_copy(update={"store": cfg.store.model_copy(update={"path": tmp_path / "d"})})
    assert store_settings(cfg, tmp_path / "d").store.path == tmp_path / "d"
    with pytest.raises(ConfigError, match="no memory store there"):
        store_settings(cfg, tmp_path / "d", create=False)
