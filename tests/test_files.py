"""``backend.files``: output written whole or not at all, paths checked before a run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backend.errors import DataError
from backend.files import check_writable, write_atomic, write_text_atomic


def test_a_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "out.json"
    write_text_atomic(path, "first")
    write_text_atomic(path, "second")
    assert path.read_text() == "second" and os.listdir(path.parent) == ["out.json"]
    assert path.stat().st_mode & 0o777 == 0o644  # readable, as an ordinary new file


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    path.write_text("old")

    def half(tmp: Path) -> None:
        tmp.write_text("new, half")
        raise OSError(28, "No space left on device")

    with pytest.raises(DataError, match=r"out\.csv: cannot write the OHLCV file: No space left"):
        write_atomic(path, half, what="OHLCV file")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["out.csv"]


def test_check_writable(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("x")
    check_writable(tmp_path / "new" / "dirs" / "out.json")  # missing folders are fine
    with pytest.raises(DataError, match="a_file is not a directory"):
        check_writable(tmp_path / "a_file" / "out.json", what="JSON file")
    with pytest.raises(DataError, match="would replace a directory"):
        check_writable(tmp_path)
    with pytest.raises(DataError, match=r"a_file/out.json: cannot write the report: File exists"):
        write_text_atomic(tmp_path / "a_file" / "out.json", "{}", what="report")


def test_a_run_s_files_are_written_all_or_none(tmp_path: Path) -> None:
    """A reviewer's: ``replay-trades`` wrote its four files one by one, so a failure left
    the new timeline beside the old plot and episodes. Every file is staged first."""
    from backend.files import write_files_atomic

    out = tmp_path / "run"
    names = ("a.csv", "b.png", "c.jsonl")

    def fill(stage: Path, *, fail_at: str | None = None) -> None:
        for name in names:
            if name == fail_at:
                raise OSError(28, "No space left on device")
            (stage / name).write_text(f"new {name}")

    def old(stage: Path) -> None:
        for name in names:
            (stage / name).write_text(f"old {name}")

    def one(stage: Path) -> None:
        (stage / "a.csv").write_text("x")

    write_files_atomic(out, names, old, what="run")
    with pytest.raises(DataError, match=r"cannot write the run: No space left on device"):
        write_files_atomic(out, names, lambda s: fill(s, fail_at="c.jsonl"), what="run")
    assert [(out / n).read_text() for n in names] == [f"old {n}" for n in names]
    with pytest.raises(DataError, match=r"b\.png was not written"):
        write_files_atomic(out, names, one, what="run")
    assert [(out / n).read_text() for n in names] == [f"old {n}" for n in names]
    write_files_atomic(out, names, fill, what="run")
    assert [(out / n).read_text() for n in names] == [f"new {n}" for n in names]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no stage left behind
