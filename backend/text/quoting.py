"""Quoting untrusted text (notes, headlines, episode descriptions) as data inside prompts.

The prompts tell the model that everything between ``<data>`` and ``</data>`` is data,
never instructions; hard constraints are enforced in code after the model answers
(:mod:`backend.agents.constraints`), so quoting is a second line of defence. For it to
hold, the quoted text must not be able to close (or re-open) the block: any tag a reader
could take for a data delimiter — any case, spaces or attributes inside the brackets
(``</DATA >``, ``< / data x=1>``), full-width or small-form look-alikes (``＜/data＞``) —
is neutralised by escaping its brackets. The text is NFKC-normalised first, so
look-alike letters are caught too.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["DELIMITER", "quote_data", "safe_data"]

DELIMITER = re.compile(r"<\s*/?\s*data\b[^<>]*>", re.IGNORECASE)
"""What a reader could take for a ``<data>`` or ``</data>`` delimiter (after NFKC)."""


def _escape(match: re.Match[str]) -> str:
    return match.group(0).replace("<", "&lt;").replace(">", "&gt;")


def safe_data(text: str) -> str:
    """``text`` as it reads inside a data block: NFKC-normalised, every delimiter-like tag
    escaped (``&lt;``, ``&gt;``). Idempotent: ``safe_data(safe_data(t)) == safe_data(t)``,
    so a caller may count the tokens of the safe text and then quote it."""
    return DELIMITER.sub(_escape, unicodedata.normalize("NFKC", text))


def quote_data(text: str) -> str:
    """``text`` as a data block: ``"<data>\\n" + safe_data(text) + "\\n</data>"``; the result
    holds exactly one opening and one closing delimiter."""
    return f"<data>\n{safe_data(text)}\n</data>"
