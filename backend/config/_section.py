"""The base of every configuration section: the project's one frozen base model (frozen,
unknown keys are errors: a mistyped YAML key fails loudly)."""

from __future__ import annotations

from backend.types import FrozenModel


class _Section(FrozenModel):
    """A configuration section (:class:`backend.types.FrozenModel`)."""
