"""Evaluations of the memory: backtest ablation (:mod:`.ablation`) and persona predictive
validity (:mod:`.persona_validity`); the ``sentinel eval`` commands are in
:mod:`backend.cli_eval`."""
