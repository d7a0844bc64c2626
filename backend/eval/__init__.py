"""Evaluations of the memory module on public data (the ``sentinel eval`` commands in
:mod:`backend.cli.eval`): LoCoMo retrieval recall (``locomo*`` modules), backtest
ablation (:mod:`.ablation`) and persona predictive validity (:mod:`.persona_validity`)."""
