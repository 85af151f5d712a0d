"""Synthetic 5-minute markets for tests and benchmarks: a random walk, or one with a planted pattern.

``planted=True``: each session draws a sign; the first ``n_candles`` bars drift
in that direction and the rest of the session continues it, so the early
candles predict the close (a learnable early-session pattern). ``planted=False``
is a driftless random walk (nothing to learn). Sessions and early closes come
from the exchange calendar.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from mltrade.calendars import sessions, timezone_of


def synthetic_market(start: str = "2015-01-01", n_sessions: int = 300, planted: bool = False,
                     seed: int = 0, n_candles: int = 17, interval: int = 5, calendar: str = "XNAS",
                     vol: float = 0.0008, early_drift: float = 0.0006, late_drift: float = 0.00025,
                     price: float = 5000.0) -> pd.DataFrame:
    """Intraday bars (tz-aware, exchange-local bar starts, lowercase OHLCV) of ``n_sessions`` sessions."""
    if n_sessions < 1:
        raise ValueError(f"n_sessions: expected a positive integer, got {n_sessions!r}")
    end = pd.Timestamp(start) + pd.Timedelta(days=int(n_sessions * 1.6) + 30)
    sched = sessions(calendar, start, end).iloc[:n_sessions]
    if len(sched) < n_sessions:
        raise ValueError(f"n_sessions: the calendar has only {len(sched)} sessions after {start}")
    rng = np.random.default_rng(seed)
    step = pd.Timedelta(minutes=interval)
    idx, rows = [], []
    level = price
    for (_, row) in sched.iterrows():
        n = int((row["close"] - row["open"]) / step)
        sign = rng.choice([-1.0, 1.0])
        drift = np.zeros(n)
        if planted:
            drift[:n_candles] = sign * early_drift
            drift[n_candles:] = sign * late_drift
        r = drift + rng.standard_normal(n) * vol
        gap = rng.standard_normal() * vol * 2
        o = level * (1 + gap)
        closes = o * np.cumprod(1 + r)
        opens = np.concatenate([[o], closes[:-1]])
        wick = np.abs(rng.standard_normal((2, n))) * vol * 0.5
        highs = np.maximum(opens, closes) * (1 + wick[0])
        lows = np.minimum(opens, closes) * (1 - wick[1])
        level = closes[-1]
        o_utc = pd.Timestamp(row["open"]).tz_convert("UTC").tz_localize(None).to_datetime64()
        idx.append(o_utc + np.arange(n) * np.timedelta64(interval, "m"))
        rows.append(np.stack([opens, highs, lows, closes, np.full(n, 1000.0)], axis=1))
    index = pd.DatetimeIndex(np.concatenate(idx).astype("datetime64[ns]")).tz_localize("UTC").tz_convert(
        timezone_of(calendar))
    df = pd.DataFrame(np.concatenate(rows), index=index, columns=["open", "high", "low", "close", "volume"])
    df.attrs.update(calendar=calendar, interval=interval, synthetic_intraday=True,
                    source=f"synthetic {'planted-pattern' if planted else 'random-walk'} market "
                            f"(seed {seed})")
    return df


def synthetic_daily_history(bars: pd.DataFrame, n_days: int = 260, seed: int = 0,
                            vol: float = 0.01) -> pd.DataFrame:
    """Random-walk daily bars for the ``n_days`` business days before the first bar (indicator warm-up)."""
    first = pd.Timestamp(bars.index[0]).tz_localize(None).normalize()
    days = pd.bdate_range(end=first - pd.Timedelta(days=1), periods=n_days)
    rng = np.random.default_rng(seed)
    r = rng.standard_normal(n_days) * vol
    close = float(bars["open"].iloc[0]) / np.cumprod(1 + r[::-1])[::-1]
    opens = close / (1 + rng.standard_normal(n_days) * vol * 0.5)
    high = np.maximum(opens, close) * (1 + np.abs(rng.standard_normal(n_days)) * vol * 0.3)
    low = np.minimum(opens, close) * (1 - np.abs(rng.standard_normal(n_days)) * vol * 0.3)
    return pd.DataFrame({"open": opens, "high": high, "low": low, "close": close,
                         "volume": np.full(n_days, 1e6)}, index=pd.DatetimeIndex(days, name="date"))
