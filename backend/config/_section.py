"""The base of every configuration section: the project's one frozen base model (frozen,
unknown keys are errors: a mistyped YAML key fails loudly)."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, ValidationInfo, field_validator

from backend.types import FrozenModel


def is_path(annotation: Any) -> bool:
    """``Path``, ``Path | None`` and the like."""
    return annotation is Path or Path in typing.get_args(annotation)


class _Section(FrozenModel):
    """A configuration section (:class:`backend.types.FrozenModel`). No setting is
    infinite or NaN: ``backtest.initial_equity: .inf`` passed its ``> 0`` bound and ended
    the run as an internal error (a reviewer's run); now it is the configuration's error.
    No path setting is empty: ``SENTINEL_STORE__PATH=`` was ``Path("")``, the working
    directory, which the store then filled with its files."""

    model_config = ConfigDict(allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_empty_path(cls, value: Any, info: ValidationInfo) -> Any:
        name = info.field_name
        if (
            isinstance(value, str)
            and not value.strip()
            and name is not None
            and is_path(cls.model_fields[name].annotation)
        ):
            raise ValueError("an empty path would be the working directory (null for none)")
        return value
