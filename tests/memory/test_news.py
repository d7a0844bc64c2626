"""``NewsFiles``: a long-lived run reads the news files again when they change."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from backend.config import load_settings
from backend.memory import NewsFiles


def _root_with(shared_data: Path, root: Path, *, headlines: int, fear_greed: int) -> None:
    """The first ``headlines`` / ``fear_greed`` rows of the real files under ``root``."""
    for name, rows in (
        ("news/crypto_headlines.csv", headlines),
        ("trades/fear_greed_index.csv", fear_greed),
    ):
        lines = (shared_data / name).read_text(encoding="utf-8").splitlines(keepends=True)
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("".join(lines[: rows + 1]), encoding="utf-8")


def test_a_headline_appended_by_another_writer_is_seen_at_the_next_read(
    shared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A reviewer's paper run kept the 7,492 headlines of its start after one more was
    appended. Unchanged files are not read again (the same object comes back)."""
    _root_with(shared_data, tmp_path, headlines=3, fear_greed=2)
    files = NewsFiles(load_settings().data, tmp_path)
    first = files.current()
    assert first.headlines is not None and len(first.headlines.headlines) == 3
    assert files.current() is first  # nothing changed: nothing read
    _root_with(shared_data, tmp_path, headlines=4, fear_greed=3)
    now = files.current()
    assert now.headlines is not None and len(now.headlines.headlines) == 4
    assert now.fear_greed is not None and len(now.fear_greed.values) == 3
    # a file caught broken keeps the news read before, said, and is read again later
    path = tmp_path / "news" / "crypto_headlines.csv"
    path.write_text(path.read_text(encoding="utf-8") + "not a date,x,y,z,u\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        assert files.current() is now
    assert "crypto_headlines.csv" in caplog.text
    _root_with(shared_data, tmp_path, headlines=5, fear_greed=3)
    os.utime(path, ns=(1, 1))  # another mtime, whatever the clock's resolution
    latest = files.current().headlines
    assert latest is not None and len(latest.headlines) == 5


def test_a_news_file_that_goes_away_is_no_longer_read(shared_data: Path, tmp_path: Path) -> None:
    _root_with(shared_data, tmp_path, headlines=3, fear_greed=2)
    files = NewsFiles(load_settings().data, tmp_path)
    (tmp_path / "trades" / "fear_greed_index.csv").unlink()
    news = files.current()
    assert news.fear_greed is None and news.headlines is not None
    assert NewsFiles(load_settings().data, None).current().headlines is None


def test_coverage_notes_say_a_run_the_news_files_do_not_cover(shared_data: Path) -> None:
    """A reviewer's: the headlines cover 2021-10-12..2022-07-05, so a 2024 run had no
    news shock at all, and its report and ablation JSON said nothing."""
    from datetime import UTC, datetime

    from backend.memory import coverage_notes, load_news

    news = load_news(load_settings().data, shared_data)
    inside = coverage_notes(
        news, datetime(2022, 1, 1, tzinfo=UTC), datetime(2022, 3, 1, tzinfo=UTC)
    )
    assert inside == []
    late = coverage_notes(
        news, datetime(2024, 11, 1, tzinfo=UTC), datetime(2024, 12, 1, tzinfo=UTC)
    )
    assert late == [
        "headlines (news shocks): none in the run's 2024-11-01..2024-12-01 "
        "(the file covers 2021-10-12..2022-07-05)"
    ]  # the Fear & Greed index covers 2024
    part = coverage_notes(news, datetime(2022, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))
    assert part == [
        "headlines (news shocks): the file covers 2021-10-12..2022-07-05, only part of the "
        "run's 2022-01-01..2024-01-01"
    ]
    assert (
        coverage_notes(
            load_news(load_settings().data, None), *(datetime(2024, 1, 1, tzinfo=UTC),) * 2
        )
        == []
    )
