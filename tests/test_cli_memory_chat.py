"""``sentinel memory import-chat`` and ``sentinel memory recall``: the contract of issue 14,
on a durable store that already holds market episodes and the persona of the same trader
(built from the trader's real fills)."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backend.compose import build_memory_system
from backend.config import LLMSettings, load_settings
from backend.data import load_hyperliquid_fills
from backend.memory.conversation import message_of, render_messages
from backend.memory.models import Episode, RecalledMessage
from backend.text.tokens import count_tokens
from tests.sentinel_cli import sentinel

pytestmark = pytest.mark.slow
TRADER = "0x513b8629fe877bb581bf244e326a047b249c4ff1"
T = datetime(2025, 3, 1, 9, tzinfo=UTC)


def _chat_line(i: int, text: str, *, hours: float, session: str, **extra: str) -> str:
    when = (T + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")
    return json.dumps(
        {"id": f"c{i}", "speaker": extra.pop("speaker", "trader"), "text": text,
         "time": when, "session": session, **extra}
    )  # fmt: skip


CHAT = [
    _chat_line(
        1, "I got liquidated on SOL last week, keep me out of leverage", hours=0, session="a"
    ),
    _chat_line(2, "Understood.", hours=0.1, session="a", speaker="assistant"),
    _chat_line(
        3,
        "Never more than 2% a trade",
        hours=0.2,
        session="a",
        image_caption="a screenshot of a liquidation notice",
    ),
    _chat_line(4, "Moving house this month, less screen time", hours=72, session="b"),
]


@pytest.fixture
def store_dir(tmp_path: Path, shared_data: Path) -> Path:
    """A durable store with a persona from the trader's fills up to 2025-02-01 and a
    market episode of the same trader."""
    cfg = load_settings()
    path = tmp_path / "khala"
    cfg = cfg.model_copy(
        update={
            "store": cfg.store.model_copy(update={"path": path, "backend": "chroma"}),
            "llm": LLMSettings(),
        }
    )
    fills = [
        f
        for f in load_hyperliquid_fills(shared_data / "trades" / "hyperliquid_fills.csv")
        if f.trader_id == TRADER and f.datetime < datetime(2025, 2, 1, tzinfo=UTC)
    ]
    with build_memory_system(cfg) as system:
        system.persona.build_from_fills(TRADER, fills, as_of=datetime(2025, 2, 1, tzinfo=UTC))
        system.episodic.add(
            [
                Episode(
                    id="crash-1", trader_id=TRADER, symbol="BTC/USDT", event_type="flash_crash",
                    occurred_at=datetime(2025, 2, 3, tzinfo=UTC), importance=0.8,
                    description="BTC/USDT fell 9% in 4 hours after a leverage flush",
                )
            ],
            as_of=datetime(2025, 2, 3, tzinfo=UTC),
        )  # fmt: skip
    return path


def _invoke(*args: str) -> tuple[int, str]:
    """The ``sentinel`` console script (its ``main`` turns errors into one line and exit
    2), warm (:mod:`tests.sentinel_cli`: a new process per command, imports inherited)."""
    done = subprocess.run(
        [sentinel(), *args],
        capture_output=True, text=True, timeout=300, env=os.environ.copy(),
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def test_import_then_recall_follows_the_contract(store_dir: Path, tmp_path: Path) -> None:
    chat = tmp_path / "chat.jsonl"
    chat.write_text("\n".join(CHAT) + "\n")
    code, out = _invoke("memory", "import-chat", "--trader", TRADER, "--file", str(chat),
                        "--store-path", str(store_dir))  # fmt: skip
    assert code == 0, out
    queries = tmp_path / "q.jsonl"
    asked = [
        {"id": "q1", "query": "when was the trader liquidated?", "as_of": "2025-03-05T00:00:00Z"},
        {"id": "q2", "query": "is the trader moving house?", "as_of": "2025-03-02T00:00:00Z"},
    ]
    queries.write_text("\n".join(json.dumps(q) for q in asked) + "\n")
    code, out = _invoke("memory", "recall", "--trader", TRADER, "--queries", str(queries),
                        "--top-k", "2", "--store-path", str(store_dir), "--json")  # fmt: skip
    assert code == 0, out
    rows = [json.loads(line) for line in out.strip().splitlines()]
    assert [r["id"] for r in rows] == ["q1", "q2"]
    for row in rows:
        assert set(row) == {"id", "message_ids", "tokens"}
        assert 0 < len(row["message_ids"]) <= 2 == len(set(row["message_ids"]))
        assert 0 < row["tokens"] <= 1500
    assert rows[0]["message_ids"][0] == "c1"
    # without --json, ids are printed as they are, never read as rich markup
    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps(asked[0] | {"id": "q2 [/oops] [red]x"}) + "\n")
    code, out = _invoke("memory", "recall", "--trader", TRADER, "--queries", str(odd),
                        "--top-k", "2", "--store-path", str(store_dir))  # fmt: skip
    assert code == 0 and out.startswith("q2 [/oops] [red]x: c1"), out
    assert "c4" not in rows[1]["message_ids"]  # said after q2's as_of: never seen
    # any K: "up to K" ids (a recall returns at most 1,000)
    code, out = _invoke("memory", "recall", "--trader", TRADER, "--queries", str(queries),
                        "--top-k", "5000", "--store-path", str(store_dir), "--json")  # fmt: skip
    assert code == 0, out
    assert [json.loads(line)["message_ids"][0] for line in out.splitlines()] == ["c1", "c1"]
    # the tokens are those of the context an answering model gets: the best
    # memory.conversation.context_messages messages (whatever --top-k) rendered by the
    # product (render_messages) in one data block, best first as the CLI printed them
    cfg = load_settings()
    cfg = cfg.model_copy(
        update={"store": cfg.store.model_copy(update={"path": store_dir}), "llm": LLMSettings()}
    )
    with build_memory_system(cfg) as system:
        as_of = datetime(2025, 3, 5, tzinfo=UTC)
        found = system.toolkit.recall(
            TRADER, asked[0]["query"], symbol=None, as_of=as_of, tiers=("working",), top_k=2
        )
        context = found["context"]
        assert context["tokens"] == rows[0]["tokens"] == count_tokens(context["text"])
        assert context["message_ids"][:2] == rows[0]["message_ids"]
        assert len(context["message_ids"]) > 2  # more than --top-k: the context's own count
        assert context["text"].count("<data>") == 1 and context["text"].endswith("</data>")
        held = system.store.get(TRADER, [f"msg:{i}" for i in context["message_ids"]], as_of=as_of)
        by_id = {r.metadata["message_id"]: r for r in held}
        recalled = [
            RecalledMessage(message=message_of(by_id[i]), score=0.0) for i in context["message_ids"]
        ]
        assert render_messages(recalled, budget=1500, max_messages=10)[0] == context["text"]
        # the market episode and the persona of the trader are still there beside the chat
        assert system.persona.get_profile(TRADER, datetime(2025, 3, 5, tzinfo=UTC)) is not None
        assert system.store.get(TRADER, ["crash-1"], as_of=datetime(2025, 3, 5, tzinfo=UTC))


def test_a_bad_line_names_file_and_line_and_writes_nothing(store_dir: Path, tmp_path: Path) -> None:
    chat = tmp_path / "chat.jsonl"
    bad = json.loads(CHAT[2])
    bad["time"] = "not a time"
    chat.write_text("\n".join([CHAT[0], CHAT[1], json.dumps(bad), CHAT[3]]) + "\n")
    code, out = _invoke("memory", "import-chat", "--trader", TRADER, "--file", str(chat),
                        "--store-path", str(store_dir))  # fmt: skip
    assert code == 2
    (line,) = out.strip().splitlines()
    assert str(chat) in line and "line 3" in line and "time" in line
    cfg = load_settings()
    cfg = cfg.model_copy(update={"store": cfg.store.model_copy(update={"path": store_dir})})
    with build_memory_system(cfg) as system:
        assert not system.store.scan(
            TRADER, as_of=T + timedelta(days=9), filters={"kind": "message"}
        )
    # out of time order: also refused before anything is written
    chat.write_text("\n".join([CHAT[3], CHAT[0]]) + "\n")
    code, out = _invoke("memory", "import-chat", "--trader", TRADER, "--file", str(chat),
                        "--store-path", str(store_dir))  # fmt: skip
    assert code == 2 and "line 2: time" in out
    # a message dated after now: it would have refused every later message of its session
    future = json.loads(CHAT[1]) | {"time": "2999-01-01T00:00:00Z"}
    chat.write_text("\n".join([CHAT[0], json.dumps(future)]) + "\n")
    code, out = _invoke("memory", "import-chat", "--trader", TRADER, "--file", str(chat),
                        "--store-path", str(store_dir))  # fmt: skip
    assert code == 2 and "line 2: time: 2999-01-01T00:00:00+00:00 is in the future" in out


def test_reader_skips_a_bom_blank_lines_and_unknown_keys(tmp_path: Path) -> None:
    from backend.cli.memory import _read_jsonl
    from backend.errors import DataError
    from backend.memory.models import ChatMessage

    chat = tmp_path / "chat.jsonl"
    extra = json.loads(CHAT[1]) | {"dia_id": "D1:2", "blip_caption": None, "text": "a\u2028b"}
    line = json.dumps(extra, ensure_ascii=False)  # a raw U+2028 inside a JSON string
    chat.write_text("\ufeff" + CHAT[0] + "\n\n" + line + "\r\n", encoding="utf-8", newline="")
    lines = _read_jsonl(chat, ChatMessage, times=("time",))
    assert [(n, m.id) for n, m in lines] == [(1, "c1"), (3, "c2")]
    assert lines[1][1].text == "a\u2028b"
    bad = {
        "epoch": json.dumps(json.loads(CHAT[0]) | {"time": 1740819600}),
        "epoch text": json.dumps(json.loads(CHAT[0]) | {"time": "1740819600"}),
        "twice": CHAT[0][:-1] + ', "id": "c9"}',
        "broken": CHAT[0][:-1],
        "blank id": json.dumps(json.loads(CHAT[0]) | {"id": "  "}),
        "nothing said": json.dumps(json.loads(CHAT[0]) | {"id": "c9", "text": " "}),
    }
    for name, line in bad.items():
        chat.write_text(CHAT[1] + "\n" + line + "\n")
        with pytest.raises(DataError, match=r"chat.jsonl: line 2: ") as err:
            _read_jsonl(chat, ChatMessage, times=("time",))
        assert {"epoch": "time: expected an ISO-8601", "epoch text": "time: expected an ISO",
                "twice": "'id' appears twice", "broken": "not a JSON object",
                "blank id": "id: must not be blank",
                "nothing said": "text: empty, and no image_caption"}[name] in str(
            err.value
        )  # fmt: skip
    # ISO-8601's basic format is a time too; a line that is not UTF-8 is named by number
    basic = json.dumps(json.loads(CHAT[1]) | {"time": "20250301T090000Z"})
    chat.write_text(CHAT[0] + "\n" + basic + "\n")
    second = _read_jsonl(chat, ChatMessage, times=("time",))[1][1]
    assert second.time == datetime(2025, 3, 1, 9, tzinfo=UTC)
    chat.write_bytes(CHAT[0].encode() + b"\n" + CHAT[1].encode() + b"\n\xff\xfe{}\n")
    with pytest.raises(DataError, match=r"chat.jsonl: line 3: not UTF-8 \(byte 1 of the line\)"):
        _read_jsonl(chat, ChatMessage, times=("time",))


def test_a_file_at_odds_with_the_store_is_refused_and_a_bad_recall_is_one_line(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"  # a new --store-path directory: the run layout
    chat = tmp_path / "chat.jsonl"
    chat.write_text("\n".join(CHAT[:3]) + "\n")
    code, out = _invoke("memory", "import-chat", "--trader", TRADER, "--file", str(chat),
                        "--store-path", str(run_dir))  # fmt: skip
    assert code == 0 and (run_dir / "khala").is_dir() and (run_dir / "audit.db").is_file(), out
    moved = json.loads(CHAT[3]) | {"id": "c2"}  # an id already stored, in another session
    chat.write_text("\n\n" + json.dumps(moved) + "\n")
    code, out = _invoke("memory", "import-chat", "--trader", TRADER, "--file", str(chat),
                        "--store-path", str(run_dir))  # fmt: skip
    assert code == 2 and "chat.jsonl: line 3: id 'c2' is already stored in session 'a'" in out
    cfg = load_settings().with_store_dir(run_dir)
    with build_memory_system(cfg.model_copy(update={"llm": LLMSettings()})) as system:
        stored = system.store.scan(TRADER, as_of=T + timedelta(days=9), filters={"kind": "message"})
        assert sorted(r.metadata["session"] for r in stored) == ["a", "a", "a"]
    queries = tmp_path / "q.jsonl"
    queries.write_text(
        json.dumps({"id": "q", "query": "leverage?", "as_of": "2025-03-05T00:00:00Z"})
    )
    for trader, store, expected in [
        ("Bob Smith", run_dir, "--trader: not a valid trader id"),
        (TRADER, tmp_path / "nowhere", "no memory store there"),
    ]:
        code, out = _invoke("memory", "recall", "--trader", trader, "--queries", str(queries),
                            "--store-path", str(store), "--json")  # fmt: skip
        assert code == 2 and expected in out and len(out.strip().splitlines()) == 1, out
    assert not (tmp_path / "nowhere").exists()
    # a trader the store holds no message of (a mistyped id): empty rows, and a warning
    mistyped = TRADER.upper().replace("0X", "0x")
    code, out = _invoke("memory", "recall", "--trader", mistyped, "--queries", str(queries),
                        "--store-path", str(run_dir), "--json")  # fmt: skip
    assert code == 0 and '{"id": "q", "message_ids": [], "tokens": 0}' in out, out
    assert "sentinel: warning: no message of trader" in out
    # two queries with one id: the contract asks one answer per line, in the file's order
    # (they had been refused), and a warning says it
    twice = json.dumps({"id": "q", "query": "moving house?", "as_of": "2025-03-05T00:00:00Z"})
    queries.write_text(queries.read_text() + "\n" + twice + "\n")
    done = subprocess.run(
        [sentinel(), "memory", "recall", "--trader", TRADER,
         "--queries", str(queries), "--store-path", str(run_dir), "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["id"] for line in done.stdout.splitlines()] == ["q", "q"]
    assert f"{queries}: line 2: id 'q' is also on line 1" in done.stderr
    # a time that is past the year 9999 once in UTC: the line named, not an internal error
    late = json.dumps({"id": "z", "query": "x", "as_of": "9999-12-31T23:59:59-05:00"})
    queries.write_text(late + "\n")
    code, out = _invoke("memory", "recall", "--trader", TRADER, "--queries", str(queries),
                        "--store-path", str(run_dir), "--json")  # fmt: skip
    assert code == 2 and out.startswith(f"sentinel: error: {queries}: line 1: as_of: "), out
    assert "outside the years 1..9999 in UTC" in out
    # a blank query was ranked on nothing (six ids, exit 0); a blank id names no answer
    for field in ("query", "id"):
        blank = {"id": "b", "query": "x", "as_of": "2025-03-05T00:00:00Z"} | {field: "  "}
        queries.write_text(json.dumps(blank) + "\n")
        code, out = _invoke("memory", "recall", "--trader", TRADER, "--queries", str(queries),
                            "--store-path", str(run_dir), "--json")  # fmt: skip
        assert code == 2 and f"line 1: {field}: must not be blank" in out, out


def test_only_the_named_speaker_is_read_as_the_trader(tmp_path: Path) -> None:
    """A chat with someone else in it (a coach): without --speaker every non-agent speaker
    is read as the trader, with a warning; with it, only the named one."""
    chat = tmp_path / "chat.jsonl"
    coach = _chat_line(9, "I never short and I avoid SOL", hours=0, session="a", speaker="coach")
    chat.write_text("\n".join([coach, CHAT[2]]) + "\n")  # the coach, then the trader's 2%
    for run, extra, warned, kinds in [
        ("all", [], True, {"long_only", "forbidden_assets", "max_risk_per_trade"}),
        ("named", ["--speaker", "trader"], False, {"max_risk_per_trade"}),
    ]:
        code, out = _invoke("memory", "import-chat", "--trader", TRADER, "--file", str(chat),
                            "--store-path", str(tmp_path / run), *extra)  # fmt: skip
        assert code == 0 and f"recorded 2 messages of {TRADER} (" in out, out
        assert ("2 speakers besides the agent (coach, trader)" in out) is warned, out
        cfg = load_settings().with_store_dir(tmp_path / run)
        with build_memory_system(cfg.model_copy(update={"llm": LLMSettings()})) as system:
            profile = system.persona.get_profile(TRADER, T + timedelta(days=1))
            assert profile is not None
            assert {c.kind for c in profile.constraints()} == kinds
    # the same file again: nothing new, said so, no warning about the persona
    code, out = _invoke("memory", "import-chat", "--trader", TRADER, "--file", str(chat),
                        "--store-path", str(tmp_path / "named"), "--speaker", "trader")  # fmt: skip
    assert code == 0 and "warning" not in out, out
    assert f"nothing new: the 2 messages of {TRADER} were already stored" in out
    code, out = _invoke("memory", "import-chat", "--trader", TRADER, "--file", str(chat),
                        "--store-path", str(tmp_path / "alice"), "--speaker", "alice")  # fmt: skip
    assert code == 0 and "warning: no message of alice" in out, out


def test_an_llm_that_fails_every_reading_is_said_in_the_imports_output(tmp_path: Path) -> None:
    """An LLM configured to read the trader's words that answers HTTP 500 every time: the
    messages are stored and the offline rules read them, and the output says the model
    failed, how often and why (it had said only "recorded ..." and logged one line); the
    command exits 3, as a backtest whose model failed does (it had exited 0)."""
    from tests.llm.chat_server import Reply, start_chat_server

    server = start_chat_server()
    server.script = [Reply(status=500)]
    chat = tmp_path / "chat.jsonl"
    chat.write_text("\n".join(CHAT) + "\n")
    env = {
        **os.environ,
        "SENTINEL_LLM__BASE_URL": server.base_url,
        "SENTINEL_LLM__MODEL": "m",
        "SENTINEL_LLM__MAX_RETRIES": "0",
        "SENTINEL_LLM__STRUCTURED_OUTPUT": "json_object",
    }
    try:
        done = subprocess.run(
            [sentinel(), "memory", "import-chat", "--trader",
             TRADER, "--file", str(chat), "--store-path", str(tmp_path / "run")],
            capture_output=True, text=True, timeout=300, env=env,
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 3, done.stderr  # a dependency failed: recorded, and exit 3
    assert f"recorded 4 messages of {TRADER}" in done.stdout
    assert (
        "warning: the LLM failed to read 3 of the 3 trader messages read into the persona "
        "(first: llm answer rejected: HTTP 500 from m: scripted failure)" in done.stderr
    ), done.stderr


def test_an_empty_chat_file_says_there_was_nothing_to_record(tmp_path: Path) -> None:
    chat = tmp_path / "chat.jsonl"
    chat.write_text("\n")
    code, out = _invoke("memory", "import-chat", "--trader", TRADER, "--file", str(chat),
                        "--store-path", str(tmp_path / "run"))  # fmt: skip
    assert code == 0 and f"nothing to record: {chat} holds no message" in out, out
    assert not (tmp_path / "run").exists()  # no store made for nothing


def test_the_in_process_backend_without_a_store_path_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reviewer's finding: with ``store.backend: memory`` and no ``--store-path`` an
    import said "recorded 20 messages" and exited 0, and kept nothing."""
    chat = tmp_path / "chat.jsonl"
    chat.write_text("\n".join(CHAT) + "\n")
    monkeypatch.setenv("SENTINEL_STORE__BACKEND", "memory")
    monkeypatch.chdir(tmp_path)
    code, out = _invoke("memory", "import-chat", "--trader", TRADER, "--file", str(chat))
    assert code == 2 and "store.backend is memory" in out and "Traceback" not in out, out
    assert len(out.strip().splitlines()) == 1, out
    code, out = _invoke("memory", "import-chat", "--trader", TRADER, "--file", str(chat),
                        "--store-path", str(tmp_path / "run"))  # fmt: skip
    assert code == 0, out  # a store path is a durable store whatever the backend
    code, out = _invoke("memory", "import-chat", "--trader", TRADER, "--file", str(chat),
                        "--store-path", str(chat))  # fmt: skip
    assert code == 2 and f"--store-path {chat}: not a directory" in out, out


def test_an_import_in_several_writes_stores_what_one_write_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """import-chat writes a file a few messages at a time (each write as of its last
    message): two sessions that alternate, split across writes, end with the same
    messages, windows and session records, times included, as one write of them all."""
    from typer.testing import CliRunner

    import backend.cli.memory as memory_cli
    from backend.cli import app
    from backend.cli._common import settings_for_store
    from backend.memory.conversation import MESSAGE_KIND, SESSION_KIND, WINDOW_KIND
    from backend.memory.models import ChatMessage
    from backend.types import END_OF_TIME

    lines = [
        _chat_line(
            i,
            f"note {i}: thinking about {'ETH' if i % 2 else 'BTC'} at level {i}",
            hours=i,
            session="ab"[i % 2],
        )
        for i in range(10)
    ]
    chat = tmp_path / "chat.jsonl"
    chat.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(memory_cli, "_IMPORT_CHUNK", 3)
    chunked = tmp_path / "chunked"
    done = CliRunner().invoke(
        app, ["memory", "import-chat", "--trader", TRADER, "--file", str(chat),
              "--store-path", str(chunked)],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    messages = [ChatMessage.model_validate_json(line) for line in lines]
    whole = tmp_path / "whole"
    with build_memory_system(settings_for_store(whole)) as system:
        system.toolkit.record_messages(TRADER, messages, as_of=messages[-1].time)

    def records(path: Path) -> list[tuple[str, str, datetime, str]]:
        with build_memory_system(settings_for_store(path, create=False)) as system:
            held = system.store.scan(
                TRADER, as_of=END_OF_TIME,
                filters={"kind": [MESSAGE_KIND, WINDOW_KIND, SESSION_KIND]},
            )  # fmt: skip
            return sorted(
                (r.id, r.text, r.created_at, json.dumps(r.metadata, sort_keys=True)) for r in held
            )

    got, want = records(chunked), records(whole)
    assert len(want) == 10 + 10 + 2 and got == want
