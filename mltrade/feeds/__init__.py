"""Data feeds: embedded sample data, CSV loader, backtrader feed over bars."""
from mltrade.feeds.bars import IndexData
from mltrade.feeds.loader import DataFileError, load_csv, write_csv
from mltrade.feeds.sample import generate_intraday, load_daily, sample_intraday

__all__ = ["IndexData", "DataFileError", "load_csv", "write_csv", "generate_intraday", "load_daily",
           "sample_intraday"]
