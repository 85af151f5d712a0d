"""Bars as the feature code (:mod:`mltrade.models.features`) reads them: checked, tagged with their session and
bar number on the exchange calendar, the interval inferred, and aggregated into session (daily) bars."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from mltrade.calendars import tag_bars
from mltrade.models.feature_specs import PRICES

def _check_bars(bars: pd.DataFrame, what: str = "bars") -> None:
    missing = [c for c in PRICES if c not in bars.columns]
    if missing:
        raise ValueError(f"{what}: missing columns {missing}; expected open, high, low, close[, volume]")
    if not isinstance(bars.index, pd.DatetimeIndex):
        raise ValueError(f"{what}: expected a DatetimeIndex")
    if not bars.index.is_monotonic_increasing:
        raise ValueError(f"{what}: timestamps must be increasing")


def infer_interval(index: pd.DatetimeIndex) -> int:
    """Bar length in minutes: the most common gap between consecutive bars."""
    if len(index) < 2:
        raise ValueError("bars: need at least two bars to infer the interval")
    d = np.diff(index.asi8) // 60_000_000_000 if index.unit == "ns" else \
        np.diff(index.as_unit("ns").asi8) // 60_000_000_000
    d = d[d > 0]
    vals, counts = np.unique(d, return_counts=True)
    return int(vals[np.argmax(counts)])


def _tags(bars: pd.DataFrame, calendar: str, interval: Optional[int]):
    if bars.index.tz is None:
        raise ValueError("bars: intraday bars need a timezone-aware index (exchange time)")
    interval = interval or infer_interval(bars.index)
    return tag_bars(bars.index, calendar, interval), interval


def _div(a, b) -> np.ndarray:
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b != 0, a / b, np.nan)


def session_daily(bars: pd.DataFrame, calendar: str = "XNAS", interval: Optional[int] = None) -> pd.DataFrame:
    """Daily bars (naive session-date index) aggregated from in-session intraday bars."""
    _check_bars(bars)
    tags, _ = _tags(bars, calendar, interval)
    inside = tags.in_session
    b = bars[inside]
    key = pd.DatetimeIndex(tags.session[inside].astype("datetime64[ns]"), name="date")
    g = b.groupby(key, sort=True)
    out = pd.DataFrame({"open": g["open"].first(), "high": g["high"].max(), "low": g["low"].min(),
                        "close": g["close"].last()})
    out["volume"] = g["volume"].sum() if "volume" in b else 0.0
    return out
