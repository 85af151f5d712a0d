"""Daily bars before the intraday data, for the indicators' warm-up (``[ncp] daily_history``)."""
from __future__ import annotations

from typing import Optional

import pandas as pd


def load_daily_history(path: str, field: str = "daily_history") -> pd.DataFrame:
    """Daily bars from a CSV file (checked by :func:`mltrade.feeds.loader.load_csv`; dates without a UTC
    offset are read as UTC), at most one row per date. Errors name ``field`` and the file."""
    from mltrade.feeds.loader import DataFileError, load_csv
    try:
        try:
            df = load_csv(path)
        except DataFileError as exc:
            if "has no timezone" not in str(exc):
                raise
            df = load_csv(path, tz="UTC")
    except DataFileError as exc:
        raise ValueError(f"{field}: {exc}") from exc
    days = pd.DatetimeIndex(df.index).tz_localize(None).normalize()
    if days.has_duplicates:
        raise ValueError(f"{field}: {path}: expected daily bars (one row per date), "
                         f"found several rows on {days[days.duplicated()][0].date()}")
    return df


def daily_history_for(bars: pd.DataFrame, path: str = "") -> Optional[pd.DataFrame]:
    """Daily bars before ``bars`` for indicator warm-up: the real sample dailies for the sample data,
    else the daily CSV at ``path`` (``[ncp] daily_history``; "" = none)."""
    if "arch.data.nasdaq" in str(bars.attrs.get("source", "")):
        from mltrade.feeds.sample import load_daily
        return load_daily()
    if path:
        return load_daily_history(path)
    return None
