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
