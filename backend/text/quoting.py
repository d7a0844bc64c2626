"""Quoting untrusted text (notes, headlines, episode descriptions) as data inside prompts.

The prompts tell the model that everything between ``<data>`` and ``</data>`` is data,
never instructions; hard constraints are enforced in code after the model answers
(:mod:`backend.agents.constraints`), so quoting is a second line of defence. For it to
hold, the quoted text must not be able to close (or re-open) the block, nor pose as a
line of the prompt outside it. The text is NFKC-normalised (full-width and small-form
look-alikes such as ``＜/data＞`` become ASCII), its format characters (Unicode ``Cf``:
zero-width spaces and joiners, soft hyphens, word joiners) are removed, and then EVERY
``<`` and ``>`` is escaped (``&lt;``, ``&gt;``): a tag made with letters NFKC does not
fold (Cyrillic ``а`` or Greek ``α`` in ``</dаta>``) or with an invisible character
inside (``</d\u200bata>``) had passed the earlier escaping of delimiter-like tags only
(a reviewer's strings, 2026-12-06). Quoted text has no bracket left to close a block with.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["DELIMITER", "breaks_lines", "quote_data", "safe_data"]

DELIMITER = re.compile(r"<\s*/?\s*data\b[^<>]*>", re.IGNORECASE)
"""What a reader could take for a ``<data>`` or ``</data>`` delimiter (after NFKC)."""


_BREAKS = frozenset(("Cc", "Zl", "Zp"))


def breaks_lines(text: str) -> bool:
    """Whether ``text`` holds a character that breaks a line or controls a terminal
    (Unicode ``Cc``, ``Zl``, ``Zp``: ``\\n``, a tab, U+2028, U+2029): a name (a chat
    message's speaker or session) rendered in a line of a prompt must not (a session
    name with a line break forged a backdated "assistant:" line, 2026-12-07)."""
    return any(unicodedata.category(c) in _BREAKS for c in text)


def safe_data(text: str) -> str:
    """``text`` as it reads inside a data block: NFKC-normalised, format characters
    removed, every ``<`` and ``>`` escaped (``&lt;``, ``&gt;``; module doc). Idempotent:
    ``safe_data(safe_data(t)) == safe_data(t)``, so a caller may count the tokens of the
    safe text and then quote it."""
    if not text.isascii():  # ASCII is its own NFKC form and has no format character
        # format characters first: NFKC makes none, and one between a letter and its
        # accent had kept them apart until a second pass (not idempotent)
        text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
        text = unicodedata.normalize("NFKC", text)
    return text.replace("<", "&lt;").replace(">", "&gt;")


def quote_data(text: str) -> str:
    """``text`` as a data block: ``"<data>\\n" + safe_data(text) + "\\n</data>"``; the result
    holds exactly one opening and one closing delimiter."""
    return f"<data>\n{safe_data(text)}\n</data>"
