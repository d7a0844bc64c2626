"""count_tokens is exact: its line-by-line memoised count equals tiktoken's count of the
whole text (the additivity argument in ``backend.text.tokens._LINE_BREAK``)."""

from __future__ import annotations

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.text.tokens import ENCODING, count_tokens, truncate_to_tokens

_ENC = tiktoken.get_encoding(ENCODING)
_PIECES = st.sampled_from(
    [
        "\n",
        "\n\n",
        "\r\n",
        " ",
        "  ",
        "\t",
        "a",
        "Zebra",
        "9",
        "123456",
        ".",
        ":",
        ">",
        "<data>",
        "'s",
        " 's",
        "é",
        "😀",
        "-",
        "+2.5%",
        "|",
        "(",
        ")",
        "[",
        "]",
        "### Title",
    ]
)


def _whole(text: str) -> int:
    return len(_ENC.encode(text, disallowed_special=()))


@settings(max_examples=3000, deadline=None)
@given(st.lists(_PIECES, min_size=1, max_size=40).map("".join))
@pytest.mark.slow
def test_count_equals_whole_text_count(text: str) -> None:
    assert count_tokens(text) == _whole(text)


@settings(max_examples=500, deadline=None)
@given(st.text(min_size=1, max_size=300))
def test_count_equals_whole_text_count_any_unicode(text: str) -> None:
    assert count_tokens(text) == _whole(text)


def test_long_lines_and_a_rendered_context() -> None:
    line = "[abc] 2022-05-03 14:00Z breakout up BTC/USDT (score 0.53, importance 0.70):\n"
    body = "<data>Breakout: close 0.7% above the 72-bar high (12,038.38).</data> | after 1d: +2.1%"
    text = "## Memory\n### Similar past episodes\n" + (line + body + "\n") * 30 + "x" * 5000
    assert count_tokens(text) == _whole(text)
    assert count_tokens("x" * 9000 + "\ny") == _whole("x" * 9000 + "\ny")


def test_truncate_keeps_within_the_limit() -> None:
    text = "word " * 500
    cut = truncate_to_tokens(text, 50)
    assert count_tokens(cut) <= 50 + 1  # the ellipsis may take one token
    assert truncate_to_tokens("short", 50) == "short"


def test_a_cut_never_ends_inside_a_number_or_a_word() -> None:
    """A reviewer's finding: "I lost 12345.67" was cut to "I lost 123…" (a different
    number) and "-4,520" to "-4…"; the cut now backs off to the last space."""
    cases = [
        ("I lost 12345.67 on SOL yesterday", 5), ("realised loss -4,520 today", 5),
        ("pnl -4,520.75 today and more", 4), ("BTC at 104,250.5 now", 4),
        ("fee $0.000123 paid", 4),
    ]  # fmt: skip
    for text, n in cases:
        cut = truncate_to_tokens(text, n)
        assert cut.endswith("…") and count_tokens(cut) <= n
        kept = cut[:-1].split()
        assert kept == text.split()[: len(kept)], cut  # whole words only
    assert truncate_to_tokens("x" * 400, 5).endswith("…")  # no space: cut at the token
