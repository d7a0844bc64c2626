"""The trading agent's parts; :mod:`backend.agents.memory` is its hierarchical memory."""
