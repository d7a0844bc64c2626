"""Headlines and the Fear & Greed index: real files and damaged fixtures."""

from __future__ import annotations

import csv
import logging
import re
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from backend.data import Headline, load_fear_greed, load_headlines
from backend.errors import DataError


@pytest.fixture(scope="module")
def headlines_csv(shared_data: Path) -> Path:
    return shared_data / "news" / "crypto_headlines.csv"


@pytest.fixture(scope="module")
def raw(headlines_csv: Path) -> list[Headline]:
    return load_headlines(headlines_csv, dedupe=False)


def test_raw_headlines(raw: list[Headline], headlines_csv: Path) -> None:
    assert len(raw) == 7_524
    assert len({h.id for h in raw}) == 7_524
    times = [h.published_at for h in raw]
    assert times == sorted(times)
    # the end of each stamped minute: a headline is surely out only then (no look-ahead)
    assert times[0] == datetime(2021, 10, 12, 20, 1, tzinfo=UTC)
    assert times[-1] == datetime(2022, 7, 5, 4, 25, tzinfo=UTC)  # "5-7-2022 04:24", day first
    first_in_file = next(h for h in raw if h.title.startswith("Bitcoin Returns Above USD 20K"))
    assert first_in_file.published_at == datetime(2022, 7, 5, 4, 25, tzinfo=UTC)
    assert first_in_file.source == "CryptoNews" and first_in_file.subject == "bitcoin"
    assert first_in_file.url is not None and first_in_file.url.startswith("https://cryptonews.com/")
    assert [h.id for h in load_headlines(headlines_csv, dedupe=False)] == [h.id for h in raw]


def test_dedupe(headlines_csv: Path, caplog: pytest.LogCaptureFixture) -> None:
    with headlines_csv.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    keys = {" ".join(r["title"].casefold().split()) for r in rows if r["title"].strip()}
    with caplog.at_level(logging.INFO, logger="backend.data"):
        unique = load_headlines(headlines_csv)
    assert len(unique) == len(keys) == 7_492
    assert len({" ".join(h.title.casefold().split()) for h in unique}) == len(unique)
    assert all(h.title for h in unique)
    assert any("dropped 32 of 7524" in r.getMessage() for r in caplog.records)
    # the earliest of a repeated title is kept
    valkyrie = [h for h in unique if "valkyrie’s bitcoin futures etf" in h.title.casefold()]
    assert len(valkyrie) == 1 and valkyrie[0].source == "CoinTelegraph"


HEADER = "date,source,subject,title,url"


def write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "headlines.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_headline_fixture_quirks(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            HEADER,
            '1-2-2022 10:00,A,bitcoin,"Bitcoin  hits\nnew high",https://a/1',
            "31-1-2022 09:00,B,bitcoin,BITCOIN HITS NEW HIGH,",
            "1-2-2022 08:00,C,nft,Other,https://c/1",
        ],
    )
    titles = [(h.source, h.published_at.day, h.url) for h in load_headlines(path)]
    assert titles == [("B", 31, None), ("C", 1, "https://c/1")]
    assert len(load_headlines(path, dedupe=False)) == 3


def test_titles_read_as_text(raw: list[Headline], tmp_path: Path) -> None:
    """140 titles of the shared file hold Python escapes written out as text (``\\xa0``,
    ``\\x93``, ``\\u200b``), which were embedded and shown as such; the ids stay those
    of the raw cells (a store keeps them)."""
    escape = re.compile(r"\\(?:x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4})")
    assert not [h.title for h in raw if escape.search(h.title)]
    assert all(h.title.isprintable() and h.title == " ".join(h.title.split()) for h in raw)
    lines = [HEADER, r"1-7-2022 15:03,CN,bitcoin,Zhu Su Seeks to Sell Mansion \x93 Reports,u",
             r"27-6-2022 16:30,CT,nft,NFT\u200b.NYC Is Back\xa0  \xa0,u"]  # fmt: skip
    read = load_headlines(write(tmp_path, lines), dedupe=False)
    assert [h.title for h in read] == ["NFT.NYC Is Back", "Zhu Su Seeks to Sell Mansion Reports"]
    plain = load_headlines(write(tmp_path, [HEADER, *lines[1:2],
                                            "27-6-2022 16:30,CT,nft,NFT.NYC Is Back,u"]),
                           dedupe=False)  # fmt: skip
    assert plain[0].title == read[0].title and plain[0].id != read[0].id  # ids: raw cells


@pytest.mark.parametrize(
    ("line", "row", "field", "words"),
    [
        ("2022-02-01 10:00,A,bitcoin,T,u", 3, "date", "unparseable date"),
        ("13-13-2022 10:00,A,bitcoin,T,u", 3, "date", "unparseable date"),
        (",A,bitcoin,T,u", 3, "date", "missing value"),
        # a row cut short (a file truncated mid-line): refused, not read as untitled
        ("1-2-2022 11:00,A,bitcoin", 3, "title", "3 of the header's 5 fields"),
        ('1-2-2022 11:00,A,"bitcoin, ether"', 3, "title", "3 of the header's 5 fields"),
    ],
)
def test_headline_damage(tmp_path: Path, line: str, row: int, field: str, words: str) -> None:
    path = write(tmp_path, [HEADER, "1-2-2022 10:00,A,bitcoin,T,u", line])
    with pytest.raises(DataError, match=words) as caught:
        load_headlines(path)
    assert (caught.value.path, caught.value.row, caught.value.field) == (str(path), row, field)


def test_headline_missing_column(tmp_path: Path) -> None:
    path = write(tmp_path, ["date,source,subject,headline,url", "1-2-2022 10:00,A,b,T,u"])
    with pytest.raises(DataError, match="title") as caught:
        load_headlines(path)
    assert (caught.value.row, caught.value.field) == (1, "title")


# --- Fear & Greed ---------------------------------------------------------------------------


def test_fear_greed_real(shared_data: Path) -> None:
    series = load_fear_greed(shared_data / "trades" / "fear_greed_index.csv")
    assert len(series) == 2_644
    assert series.name == "fear_greed" and series.dtype == "int64"
    assert isinstance(series.index, pd.DatetimeIndex) and str(series.index.tz) == "UTC"
    assert series.index.name == "date" and series.index.is_monotonic_increasing
    assert (series.index == series.index.normalize()).all()
    assert series.between(0, 100).all()
    assert series.loc["2018-02-01"].item() == 30
    assert series.index[-1] == pd.Timestamp("2025-05-02", tz="UTC")


FG_HEADER = "timestamp,value,classification,date"


@pytest.mark.parametrize(
    ("line", "field", "words"),
    [
        ("1517635800,101,Greed,2018-02-03", "value", "0..100"),
        ("1517635800,40.5,Fear,2018-02-03", "value", "0..100"),
        ("1517635800,x,Fear,2018-02-03", "value", "not a finite number"),
        ("1517635800,40,Fear,03-02-2018", "date", "unparseable date"),
        ("1517635800,41,Fear,2018-02-02", "value", "two different values"),
    ],
)
def test_fear_greed_damage(tmp_path: Path, line: str, field: str, words: str) -> None:
    path = tmp_path / "fg.csv"
    lines = [FG_HEADER, "1517463000,30,Fear,2018-02-01", "1517549400,15,Extreme Fear,2018-02-02"]
    path.write_text("\n".join([*lines, line]) + "\n")
    with pytest.raises(DataError, match=words) as caught:
        load_fear_greed(path)
    assert (caught.value.path, caught.value.row, caught.value.field) == (str(path), 4, field)


def test_fear_greed_repairs(tmp_path: Path) -> None:
    path = tmp_path / "fg.csv"
    lines = [
        FG_HEADER,
        "1517549400,15,Extreme Fear,2018-02-02",
        "1517463000,30,Fear,2018-02-01",
        "1517549400,15,Extreme Fear,2018-02-02",
    ]
    path.write_text("\n".join(lines) + "\n")
    series = load_fear_greed(path)
    assert series.tolist() == [30, 15]
