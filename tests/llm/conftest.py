"""Fixtures of the LLM tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from backend.llm import _wire


@pytest.fixture(autouse=True)
def _no_remembered_modes() -> Iterator[None]:
    """Each test starts with no structured-output mode remembered: the memo is per
    process and keyed by the endpoint's URL, and a loopback server of a later test can
    get a port an earlier one used (2 in 300 binds, measured), which would answer its
    probe from the earlier server's."""
    _wire._detected.clear()
    _wire._server_faults.clear()
    yield
    _wire._detected.clear()
    _wire._server_faults.clear()
