"""The scheduler service: scheduled memory jobs and the paper-trading loop.

- :mod:`backend.service.scheduler` - apscheduler 3 with a persistent SQLAlchemy job store;
- :mod:`backend.service.jobs` - the job functions (importable, plain arguments);
- :mod:`backend.service.paper` - the DeepTraderManager on live candles (ccxt) with the
  backtest's broker;
- :mod:`backend.service.persona_refresh`, :mod:`backend.service.consolidation` - the
  work of the jobs, clock-free (``as_of`` is an argument);
- :mod:`backend.service.runtime` - what the jobs of one process share.
"""
