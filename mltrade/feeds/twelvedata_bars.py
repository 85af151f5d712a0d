"""TwelveData bars as frames, pure functions of the client (:mod:`mltrade.feeds.twelvedata`): the intervals,
parsing a ``time_series`` body, merging pages, dropping bars still forming, and exchange-time helpers."""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import pandas as pd

from mltrade.feeds.twelvedata_errors import TwelveDataServerError

#: TwelveData interval name -> length in minutes (``None``: daily or longer, dates only)
INTERVALS = {"1min": 1, "5min": 5, "15min": 15, "30min": 30, "45min": 45, "1h": 60, "2h": 120,
             "4h": 240, "1day": None, "1week": None, "1month": None}
DateLike = Union[str, pd.Timestamp]


def interval_minutes(interval: str) -> Optional[int]:
    """Minutes of a TwelveData interval (``"5min"`` -> 5), ``None`` for daily or longer."""
    if interval not in INTERVALS:
        raise ValueError(f"interval: expected one of {list(INTERVALS)}, got {interval!r}")
    return INTERVALS[interval]


def _empty_frame(interval: str, tz: Optional[str] = None) -> pd.DataFrame:
    idx = pd.DatetimeIndex([], name="datetime")
    if INTERVALS.get(interval) and tz:
        idx = idx.tz_localize(tz)
    return pd.DataFrame({c: pd.Series([], dtype=float) for c in ("open", "high", "low", "close", "volume")},
                        index=idx)


def parse_time_series(body: dict, interval: str, symbol: str = "") -> pd.DataFrame:
    """Turn a ``time_series`` JSON body into ascending bars (tz-aware for intraday intervals)."""
    where = f"TwelveData time_series {symbol} {interval}".strip()
    values = body.get("values")
    meta = body.get("meta") or {}
    if values is None:
        raise TwelveDataServerError(f"{where}: answer has no 'values' field (keys: {sorted(body)})")
    if not isinstance(values, list):
        raise TwelveDataServerError(f"{where}: 'values' is not a list")
    tz = meta.get("exchange_timezone") or _guess_tz(symbol)
    if not values:
        return _empty_frame(interval, tz if INTERVALS.get(interval) else None)
    frame = pd.DataFrame(values)
    missing = {"datetime", "open", "high", "low", "close"} - set(frame.columns)
    if missing:
        raise TwelveDataServerError(f"{where}: bars lack field(s) {sorted(missing)}")
    try:
        idx = pd.DatetimeIndex(pd.to_datetime(frame["datetime"], format="mixed"), name="datetime")
        idx = idx.as_unit("ns")
        data = {c: pd.to_numeric(frame[c]).astype(float).to_numpy() for c in ("open", "high", "low", "close")}
    except (ValueError, TypeError) as exc:
        raise TwelveDataServerError(f"{where}: unparseable bar values ({exc})") from None
    data["volume"] = (pd.to_numeric(frame["volume"], errors="coerce").fillna(0.0).astype(float).to_numpy()
                      if "volume" in frame else np.zeros(len(frame)))
    if INTERVALS.get(interval):
        idx = idx.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
    else:
        idx = idx.normalize()
    out = pd.DataFrame(data, index=idx)
    out = out[out.index.notna()]
    return merge_bars([out])


def merge_bars(parts: list) -> pd.DataFrame:
    """Concatenate bar frames, sort ascending, keep the LAST occurrence of a duplicated timestamp."""
    parts = [p for p in parts if p is not None and len(p)]
    if not parts:
        return _empty_frame("1day")
    tzs = {str(p.index.tz) for p in parts}
    if len(tzs) > 1:
        tz = str(parts[0].index.tz)
        parts = [p.tz_convert(tz) if p.index.tz is not None else p for p in parts]
    df = pd.concat(parts) if len(parts) > 1 else parts[0].copy()
    df = df[~df.index.duplicated(keep="last")].sort_index(kind="stable")
    df.index.name = "datetime"
    return df[["open", "high", "low", "close", "volume"]]


def drop_incomplete(bars: pd.DataFrame, interval: str, now: pd.Timestamp, tz: str = "UTC") -> pd.DataFrame:
    """Drop bars still forming at ``now``.

    Intraday: ``start + interval > now``; daily: today (in ``tz``) or later.
    """
    minutes = interval_minutes(interval)
    if minutes:
        return bars[np.asarray(bars.index + pd.Timedelta(minutes=minutes) <= now)]
    today = now.tz_convert(tz).tz_localize(None).normalize()
    return bars[np.asarray(bars.index < today)]


def _guess_tz(symbol: str) -> str:
    from mltrade.calendars import calendar_for_symbol, timezone_of
    try:
        return timezone_of(calendar_for_symbol(symbol))
    except ValueError:
        return "UTC"


def _to_local_naive(t: DateLike, tz: str) -> pd.Timestamp:
    ts = pd.Timestamp(t)
    if ts.tz is not None:
        ts = ts.tz_convert(tz).tz_localize(None)
    return ts


def _localise(t: pd.Timestamp, tz) -> pd.Timestamp:
    return t.tz_localize(tz) if tz is not None else t

