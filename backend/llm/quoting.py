"""Quoting untrusted text (notes, headlines) as data inside prompts."""

from __future__ import annotations

__all__ = ["quote_data"]


def quote_data(text: str) -> str:
    """Wrap untrusted text as data: delimiters escaped so it cannot close the block."""
    safe = text.replace("<data>", "&lt;data&gt;").replace("</data>", "&lt;/data&gt;")
    return f"<data>\n{safe}\n</data>"
