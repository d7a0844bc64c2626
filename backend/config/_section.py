"""The base of every configuration section: the project's one frozen base model (frozen,
unknown keys are errors: a mistyped YAML key fails loudly)."""

from __future__ import annotations

from pydantic import ConfigDict

from backend.types import FrozenModel


class _Section(FrozenModel):
    """A configuration section (:class:`backend.types.FrozenModel`). No setting is
    infinite or NaN: ``backtest.initial_equity: .inf`` passed its ``> 0`` bound and ended
    the run as an internal error (a reviewer's run); now it is the configuration's error."""

    model_config = ConfigDict(allow_inf_nan=False)
