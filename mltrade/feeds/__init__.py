"""Data feeds: embedded sample data, CSV loader, backtrader feed over bars, TwelveData feed.

``TwelveDataFeed`` is imported on first use (``from mltrade.feeds import TwelveDataFeed``).
"""
from mltrade._lazy import lazy_names
from mltrade.feeds.bars import IndexData
from mltrade.feeds.loader import DataFileError, load_csv, write_csv
from mltrade.feeds.sample import generate_intraday, load_daily, sample_intraday

__getattr__, __dir__ = lazy_names(__name__, globals(), {"TwelveDataFeed": "mltrade.feeds.twelvedata_feed"})

__all__ = ["IndexData", "DataFileError", "load_csv", "write_csv", "generate_intraday", "load_daily",
           "sample_intraday", "TwelveDataFeed"]
