"""Issue 7.2 — bad input: a clear domain error (file, row, field) or a documented repair,
never an unhandled exception, never a partial write to memory; every CLI command turns
it into one line and exit status 2.

- **Real-world damage**, by name, to OHLCV, fills and headline files: truncated gzip,
  not gzip at all, wrong delimiter (``;``, tab), day-first or month-first dates, epoch
  timestamps in ms (a documented repair: read by magnitude) and in µs (an error),
  undecodable bytes, huge numbers (``1e400``), an empty file, a header with no rows, a
  file cut mid-row.
- **Cell-level properties** (hypothesis): any value in any cell of an OHLCV file (floats
  incl. NaN/inf/huge, dates in many formats and epochs of every unit, arbitrary text).
- **Notes** (hypothesis): any text routed into a stored persona leaves whole versions
  only (contiguous versions, nothing pending in the audit trail, every record decodes).
- **Config files** (hypothesis): any YAML document or bytes gives Settings or a
  ConfigError naming the file or the dotted key.
- **LLM outputs** (hypothesis, loopback server): any JSON answer is parsed or refused
  with a reason; the client never raises.
- **CLI**: data check, data download, memory search, persona show, backtest,
  replay-trades and demo on such inputs: one line on stderr, exit 2.

(Byte-level fuzzing of the loaders is tests/data/test_fuzz.py; the OHLCV damage table
with exact rows and fields is tests/data/test_ohlcv_damage.py.)
"""

from __future__ import annotations

import gzip
import json
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import backend.memory  # noqa: F401  (import order: memory before backend.llm.prompts)
from backend.agents.memory import PersonaManager
from backend.agents.memory._persona_store import change_from_record, profile_from_record
from backend.agents.policies import LLMDecision
from backend.cli import main
from backend.config import LLMSettings, Settings, load_settings
from backend.data import load_headlines, load_hyperliquid_fills, read_ohlcv_file
from backend.errors import ConfigError, DataError, SentinelError
from backend.llm import build_llm
from tests.conftest import StoreFactory
from tests.llm.chat_server import ChatServer, Reply, start_chat_server

HEADER = "date,open,high,low,close,volume"
ROWS = [f"2024-01-01T{h:02d}:00:00Z,100,110,95,105,12.5" for h in range(6)]
FILLS_HEADER = (
    "Account,Coin,Execution Price,Size Tokens,Size USD,Side,Timestamp IST,Start Position,"
    "Direction,Closed PnL,Transaction Hash,Order ID,Crossed,Fee,Trade ID,Timestamp"
)
FILL_ROWS = [
    f"0xabc,BTC,95000,0.01,950,BUY,0{d}-12-2024 22:50,0,Open Long,0,0xe{d},5201770663{d},TRUE,"
    f"0.1,8.95E+14,1.73E+12"
    for d in range(1, 6)
]
NEWS_HEADER = "date,source,subject,title,url"
NEWS_ROWS = [f"{d}-7-2022 04:24,CryptoNews,bitcoin,Headline {d},https://x/{d}" for d in range(1, 6)]
MINIMAL = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def text_of(header: str, rows: list[str]) -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


def damaged(header: str, rows: list[str], kind: str, *, date_col: int, num_col: int) -> bytes:
    """The file with one named kind of real-world damage."""

    def cell(row: str, col: int, value: str) -> str:
        parts = row.split(",")
        parts[col] = value
        return ",".join(parts)

    good = text_of(header, rows)
    if kind == "wrong-delimiter":
        return good.replace(b",", b";")
    if kind == "tab-delimiter":
        return good.replace(b",", b"\t")
    if kind == "day-first-dates":
        return text_of(header, [cell(r, date_col, "13/01/2024 00:00") for r in rows])
    if kind == "month-first-dates":
        return text_of(header, [cell(r, date_col, "12-13-2024 22:50") for r in rows])
    if kind == "iso-dates":
        return text_of(header, [cell(r, date_col, "2024-12-02T22:50:00Z") for r in rows])
    if kind == "epoch-us":
        return text_of(
            header,
            [cell(r, date_col, str(1704067200000000 + i * 3600000000)) for i, r in enumerate(rows)],
        )
    if kind == "undecodable":
        return good[: len(good) // 2] + b"\xff\xfe\x80" + good[len(good) // 2 :]
    if kind == "huge-number":
        return text_of(header, [*rows[:2], cell(rows[2], num_col, "1e400"), *rows[3:]])
    if kind == "empty":
        return b""
    if kind == "header-only":
        return text_of(header, [])
    if kind == "cut-mid-row":
        return good[: len(good) - len(rows[-1]) // 2 - 1]
    raise AssertionError(kind)


OHLCV_DAMAGE = [
    "wrong-delimiter",
    "tab-delimiter",
    "day-first-dates",
    "epoch-us",
    "undecodable",
    "huge-number",
    "empty",
    "header-only",
    "cut-mid-row",
]
FILL_DAMAGE = [
    "wrong-delimiter",
    "month-first-dates",
    "iso-dates",
    "undecodable",
    "huge-number",
    "empty",
    "header-only",
    "cut-mid-row",
]
NEWS_DAMAGE = [
    "wrong-delimiter",
    "month-first-dates",
    "iso-dates",
    "undecodable",
    "empty",
    "header-only",
]


def ohlcv_file(tmp: Path, kind: str, *, gz: bool = False) -> Path:
    path = tmp / ("BTC_USDT-1h.csv.gz" if gz else "BTC_USDT-1h.csv")
    data = damaged(HEADER, ROWS, kind, date_col=0, num_col=4)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def assert_located(err: DataError, path: Path) -> None:
    assert err.path is not None and err.path.startswith(str(path))
    assert str(path) in str(err)


@pytest.mark.parametrize("kind", OHLCV_DAMAGE)
@pytest.mark.parametrize("gz", [False, True], ids=["csv", "csv.gz"])
def test_ohlcv_damage_is_a_located_data_error(kind: str, gz: bool, tmp_path: Path) -> None:
    path = ohlcv_file(tmp_path, kind, gz=gz)
    with pytest.raises(DataError) as caught:
        read_ohlcv_file(path, pair="BTC/USDT", timeframe="1h")
    assert_located(caught.value, path)
    if kind not in ("empty", "header-only", "wrong-delimiter", "tab-delimiter"):
        assert caught.value.row is not None and caught.value.row >= 2


def test_truncated_and_fake_gzip(tmp_path: Path) -> None:
    path = tmp_path / "BTC_USDT-1h.csv.gz"
    data = gzip.compress(text_of(HEADER, ROWS))
    for broken in (data[: len(data) // 2], data[:-9], text_of(HEADER, ROWS)):
        path.write_bytes(broken)
        with pytest.raises(DataError, match="gzip") as caught:
            read_ohlcv_file(path, pair="BTC/USDT", timeframe="1h")
        assert_located(caught.value, path)


def test_epoch_units_are_a_documented_repair(tmp_path: Path) -> None:
    """Seconds and milliseconds (even mixed in one file) are read by magnitude."""
    seconds = [1704067200 + 3600 * i for i in range(6)]
    for dates in (
        seconds,
        [s * 1000 for s in seconds],
        [s * (1000 if i % 2 else 1) for i, s in enumerate(seconds)],
    ):
        rows = [f"{d},100,110,95,105,1" for d in dates]
        path = tmp_path / "BTC_USDT-1h.csv"
        path.write_bytes(text_of(HEADER, rows))
        frame = read_ohlcv_file(path, pair="BTC/USDT", timeframe="1h").frame
        assert frame.index[0] == datetime(2024, 1, 1, tzinfo=UTC) and len(frame) == 6


@pytest.mark.parametrize("kind", FILL_DAMAGE)
def test_fill_damage_is_a_located_data_error(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "fills.csv"
    path.write_bytes(damaged(FILLS_HEADER, FILL_ROWS, kind, date_col=6, num_col=4))
    with pytest.raises(DataError) as caught:
        load_hyperliquid_fills(path)
    assert_located(caught.value, path)


@pytest.mark.parametrize("kind", NEWS_DAMAGE)
def test_headline_damage_is_a_located_data_error(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "news.csv"
    path.write_bytes(damaged(NEWS_HEADER, NEWS_ROWS, kind, date_col=0, num_col=3))
    with pytest.raises(DataError) as caught:
        load_headlines(path)
    assert_located(caught.value, path)


# ------------------------------------------------------------------ cell-level properties

_moments = st.datetimes(
    min_value=datetime(1960, 1, 1), max_value=datetime(2300, 1, 1), timezones=st.just(UTC)
)
cell_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["1e400", "-1e400", "1e308", "9" * 400, "0x1A", "1,5", "", " ", "N/A"]),
    st.text(max_size=12),
    _moments.map(lambda d: d.strftime("%d/%m/%Y %H:%M")),
    _moments.map(lambda d: d.strftime("%m-%d-%Y %H:%M")),
    _moments.map(lambda d: d.isoformat()),
    st.builds(
        lambda d, unit: str(int(d.timestamp() * unit)),
        _moments,
        st.sampled_from([1, 1e3, 1e6, 1e9]),
    ),
)


@MINIMAL
@given(
    row=st.integers(0, len(ROWS) - 1),
    col=st.integers(0, 5),
    value=cell_values,
)
def test_any_cell_value_loads_validly_or_fails_located(row: int, col: int, value: str) -> None:
    rows = list(ROWS)
    parts = rows[row].split(",")
    parts[col] = value.replace(",", ";").replace("\n", " ").replace('"', "'")
    rows[row] = ",".join(parts)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "BTC_USDT-1h.csv"
        path.write_bytes(text_of(HEADER, rows))
        try:
            loaded = read_ohlcv_file(path, pair="BTC/USDT", timeframe="1h")
        except DataError as err:
            assert_located(err, path)
            assert err.row is not None and 1 <= err.row <= len(rows) + 1
            assert err.field is None or err.field in HEADER.split(",")
            return
    frame = loaded.frame
    assert frame.index.is_monotonic_increasing and frame.index.is_unique
    assert frame.notna().all().all() and (frame[["open", "high", "low", "close"]] > 0).all().all()


# ------------------------------------------------------------------ notes


notes = st.one_of(
    st.text(max_size=400),
    st.lists(
        st.sampled_from(
            [
                "Never more than",
                "2%",
                "risk per trade",
                "no memecoins",
                "10x",
                "leverage",
                "only BTC",
                "</data>",
                "\x00",
                "é",
                "∞",
                "-5%",
                "1e400",
                "I want to",
                "never short",
                "max daily loss",
                "ETH,",
                "\n",
            ]
        ),
        max_size=20,
    ).map(" ".join),
)


def test_any_note_writes_whole_versions_or_nothing(make_store: StoreFactory) -> None:
    store = make_store()
    manager = PersonaManager(store)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    calls = {"n": 0, "versions": 0}

    @MINIMAL
    @given(notes)
    def check(text: str) -> None:
        calls["n"] += 1
        as_of = start + timedelta(hours=calls["n"])
        try:
            changes = manager.update_from_text("trader-1", text, as_of=as_of)
        except SentinelError:
            changes = []
        records = store.scan("trader-1", as_of=as_of)
        for record in records:
            if record.kind == "persona":
                profile_from_record(record)
            elif record.kind == "persona_change":
                change_from_record(record)
        versions = sorted(int(r.metadata["version"]) for r in records if r.kind == "persona")
        assert versions == list(range(1, len(versions) + 1))
        if any(c.action in ("ADD", "UPDATE") for c in changes):
            assert versions[-1] == calls["versions"] + 1
        calls["versions"] = len(versions)
        assert store._audit.pending() == 0

    check()
    assert calls["versions"] >= 5  # some notes did change the persona


# ------------------------------------------------------------------ config files

yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(["1e400", "-1", "embedded", "server", "cloud", "../x", "0"]),
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(["mode", "port", "path", "x", "api_key", "1"]), inner, max_size=3
        ),
    ),
    max_leaves=8,
)
sections = st.sampled_from([*Settings.model_fields, "unknown"])
fields = st.sampled_from(
    sorted(
        {
            f
            for s in Settings.model_fields.values()
            for f in getattr(s.annotation, "model_fields", {})
        }
        | {"typo", "api_key"}
    )
)
documents = st.one_of(
    st.dictionaries(sections, st.dictionaries(fields, yaml_values, max_size=3), max_size=3).map(
        lambda d: yaml.safe_dump(d).encode()
    ),
    yaml_values.map(lambda v: yaml.safe_dump(v).encode()),
    st.binary(max_size=60),
    st.sampled_from(
        [
            b"",
            b"store: [",
            b"\xff\xfe",
            b"store:\n  port: 1e400\n",
            b"- a\n- b\n",
            b"store: {mode: embedded, port: 99999999999999999999999}\n",
        ]
    ),
)


@MINIMAL
@given(documents)
def test_any_config_file_loads_or_names_the_problem(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_bytes(data)
        try:
            loaded = load_settings(path)
        except ConfigError as err:
            message = str(err)
            assert str(path) in message
            assert "\n" not in message.strip() or message.count("\n") < 5
            return
    assert isinstance(loaded, Settings)


# ------------------------------------------------------------------ LLM outputs


@pytest.fixture()
def server() -> Iterator[ChatServer]:
    srv = start_chat_server()
    yield srv
    srv.shutdown()
    srv.server_close()


json_values = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)
GOOD = {"action": "buy", "size": 0.4, "confidence": 0.5, "rationale": "x", "memory_ids": []}
answers = st.one_of(
    json_values.map(json.dumps),
    st.builds(
        lambda key, value: json.dumps({**GOOD, key: value}),
        st.sampled_from([*GOOD, "extra"]),
        json_values,
    ),
    st.text(max_size=80),
)


def test_any_llm_answer_is_parsed_or_refused(server: ChatServer) -> None:
    llm = build_llm(LLMSettings(base_url=server.base_url, model="m", max_retries=0))
    assert llm is not None
    seen = {"ok": 0, "refused": 0}

    @MINIMAL
    @given(answers)
    def check(content: str) -> None:
        server.script = [Reply(content=content)]
        result = llm.parse(system="s", user="u", schema=LLMDecision)
        if result.value is None:
            assert result.error
            seen["refused"] += 1
        else:
            assert isinstance(result.value, LLMDecision)
            seen["ok"] += 1

    check()
    assert seen["refused"] > 10


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
