"""The backtest: the engine owns the clock, the simulated broker fills at the next open."""

from backend.backtest._broker import BrokerFill, SimBroker

__all__ = ["BrokerFill", "SimBroker"]
