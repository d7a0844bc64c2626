"""CryptoSentinel memory: hierarchical memory for an LLM crypto-trading agent.

Sub-packages: :mod:`backend.storage` (the Khala vector layer over chromadb),
:mod:`backend.embeddings` (offline MiniLM, OpenAI-compatible, hashing),
:mod:`backend.data` (OHLCV, fills, headlines), :mod:`backend.config`, :mod:`backend.errors`.
"""

__version__ = "0.1.0"
