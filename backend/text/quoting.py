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

__all__ = ["DELIMITER", "quote_data"]

DELIMITER = re.compile(r"<\s*/?\s*data\b[^<>]*>", re.IGNORECASE)
"""What a reader could take for a ``<data>`` or ``</data>`` delimiter (after NFKC)."""


def _escape(match: re.Match[str]) -> str:
    return match.group(0).replace("<", "&lt;").replace(">", "&gt;")


def quote_data(text: str) -> str:
    """``text`` as a data block: ``"<data>\\n" + safe text + "\\n</data>"``, where the safe
    text is ``text`` NFKC-normalised with every delimiter-like tag escapes (``&lt;``,
    ``&gt;``); the result holds exactly one opening and one closing delimiter."""
    safe = DELIMITER.sub(_escape, unicodedata.normalize("NFKC", text))
    return f"<data>\n{safe}\n</data>"
