"""Fixtures of the reliability tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.forker import Forker


@pytest.fixture(scope="session")
def forker() -> Iterator[Forker]:
    """The warm launcher of the SIGKILL tests' children (one per session: its imports
    are paid once, every child is a fork of the same freshly-imported process)."""
    launcher = Forker()
    yield launcher
    launcher.close()
