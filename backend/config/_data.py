"""Sections of the data sources: the exchange (``exchange``) and the data files (``data``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from backend.config._section import _Section


class ExchangeSettings(_Section):
    """ccxt exchange access for downloads (and later, paper trading)."""

    id: str = "binance"
    api_base_url: str | None = None
    """Rewrite every API URL's scheme and host (testnets, proxies, loopback tests)."""
    timeout_ms: int = Field(default=10_000, ge=100, le=600_000)
    api_key: SecretStr | None = None
    """Environment only: ``SENTINEL_EXCHANGE__API_KEY`` (``fetch_my_trades`` needs it)."""
    secret: SecretStr | None = None
    """Environment only: ``SENTINEL_EXCHANGE__SECRET``."""


class DataSettings(_Section):
    """Where the real data lives; files are read in place, never copied."""

    data_dir: Path = Path("../shared/data")
    """The data root; the paths below are under it unless absolute."""
    market: Path = Path("market/binance")
    """Directory of OHLCV files named ``BASE_QUOTE-TIMEFRAME.<format>`` (freqtrade's)."""
    fills: Path = Path("trades/hyperliquid_fills.csv")
    """Hyperliquid fills export of the traders (``replay-trades``, persona refresh)."""
    headlines: Path = Path("news/crypto_headlines.csv")
    """Crypto headlines (``date``, ``title``, ...): news shocks and topics."""
    fear_greed: Path = Path("trades/fear_greed_index.csv")
    """Daily Fear & Greed index."""

    @property
    def market_dir(self) -> Path:
        return self.data_dir / self.market

    @property
    def fills_path(self) -> Path:
        return self.data_dir / self.fills

    @property
    def headlines_path(self) -> Path:
        return self.data_dir / self.headlines

    @property
    def fear_greed_path(self) -> Path:
        return self.data_dir / self.fear_greed
