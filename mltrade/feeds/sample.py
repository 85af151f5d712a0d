"""Embedded sample data: the real daily NASDAQ Composite 1999–2018 and synthetic 5-minute bars.

The daily rows are real (shipped by the ``arch`` package). The intraday bars
are **synthetic**: a seeded, vectorised generator draws one Brownian bridge per
day and maps it monotonically so that every day's bars are consistent with its
real OHLC (first open = day open, highest high = day high, lowest low = day
low, last close = day close). Sessions and early closes come from the XNAS
exchange calendar. ``df.attrs["synthetic_intraday"]`` is ``True`` and every
report that uses the data says so.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Optional

import numpy as np
import pandas as pd

from mltrade.calendars import sessions, timezone_of

SAMPLE_CALENDAR = "XNAS"
SAMPLE_SYMBOL = "IXIC"
SAMPLE_SOURCE = "NASDAQ Composite daily 1999-2018 (arch.data.nasdaq), synthetic 5-minute bars"


@lru_cache(maxsize=1)
def _load_daily_cached() -> pd.DataFrame:
    from arch.data import nasdaq

    raw = nasdaq.load()
    df = raw.rename(columns=str.lower)[["open", "high", "low", "close", "volume"]].astype(float)
    df.index = pd.DatetimeIndex(df.index).tz_localize(None).normalize()
    df.index.name = "date"
    # The source has a handful of rows where open/close fall outside high/low by rounding:
    # widen high/low so every row is a valid OHLC bar.
    df["high"] = df[["open", "high", "low", "close"]].max(axis=1)
    df["low"] = df[["open", "high", "low", "close"]].min(axis=1)
    return df


def load_daily(start: Optional[str] = None, end: Optional[str] = None) -> pd.DataFrame:
    """Real daily NASDAQ Composite bars (columns open/high/low/close/volume, naive date index)."""
    df = _load_daily_cached().loc[start:end].copy()
    df.attrs.update(symbol=SAMPLE_SYMBOL, source="arch.data.nasdaq", synthetic_intraday=False)
    return df


def _u_shape(n: int) -> np.ndarray:
    x = np.linspace(-1.0, 1.0, n)
    w = 0.35 + 1.6 * x ** 2
    w[-1] *= 1.8  # closing auction
    w[0] *= 1.4   # opening cross
    return w / w.sum()


def generate_intraday(daily: pd.DataFrame, seed: int = 42, interval: int = 5,
                      calendar: str = SAMPLE_CALENDAR) -> pd.DataFrame:
    """Synthetic ``interval``-minute bars for every daily row, consistent with its real OHLC.

    Vectorised over all days of equal length (full and early-close sessions);
    deterministic for a given ``seed``. Index: bar start time, exchange-local.
    """
    if daily.empty:
        raise ValueError("daily: expected at least one row")
    tz = timezone_of(calendar)
    sched = sessions(calendar, daily.index[0], daily.index[-1])
    days = daily.index.intersection(sched.index)
    daily = daily.loc[days]
    opens_utc = sched.loc[days, "open"]
    closes_utc = sched.loc[days, "close"]
    nbars = ((closes_utc - opens_utc) / pd.Timedelta(minutes=interval)).astype(int).to_numpy()
    rng = np.random.default_rng(seed)
    step = np.timedelta64(interval, "m")
    pieces_idx, pieces = [], []
    for n in np.unique(nbars):
        sel = np.flatnonzero(nbars == n)
        o = daily["open"].to_numpy()[sel][:, None]
        h = daily["high"].to_numpy()[sel][:, None]
        lo = daily["low"].to_numpy()[sel][:, None]
        c = daily["close"].to_numpy()[sel][:, None]
        vol = daily["volume"].to_numpy()[sel][:, None]
        m = len(sel)
        # Brownian bridge from o to c with n steps (n+1 points)
        steps = rng.standard_normal((m, n))
        walk = np.concatenate([np.zeros((m, 1)), np.cumsum(steps, axis=1)], axis=1)
        t = np.linspace(0.0, 1.0, n + 1)[None, :]
        bridge = walk - t * walk[:, -1:]
        path = o + (c - o) * t + bridge * (h - lo) / max(np.sqrt(n), 1.0)
        lo_oc, hi_oc = np.minimum(o, c), np.maximum(o, c)
        # guarantee an interior excursion below/above the open-close range where the day had one
        inner = path[:, 1:-1]
        if inner.shape[1]:
            imin = np.argmin(inner, axis=1)
            imax = np.argmax(inner, axis=1)
            rows = np.arange(m)
            need_lo = (lo[:, 0] < lo_oc[:, 0]) & (inner[rows, imin] >= lo_oc[:, 0])
            need_hi = (h[:, 0] > hi_oc[:, 0]) & (inner[rows, imax] <= hi_oc[:, 0])
            inner[rows[need_lo], imin[need_lo]] = lo_oc[need_lo, 0] - 1.0
            inner[rows[need_hi], imax[need_hi]] = hi_oc[need_hi, 0] + 1.0
        pmin = path.min(axis=1, keepdims=True)
        pmax = path.max(axis=1, keepdims=True)
        # monotone piecewise-linear map: pmin->low, [lo_oc, hi_oc] fixed, pmax->high
        with np.errstate(divide="ignore", invalid="ignore"):
            below = lo + (path - pmin) * np.where(lo_oc > pmin, (lo_oc - lo) / (lo_oc - pmin), 0.0)
            above = hi_oc + (path - hi_oc) * np.where(pmax > hi_oc, (h - hi_oc) / (pmax - hi_oc), 0.0)
        mapped = np.where(path < lo_oc, below, np.where(path > hi_oc, above, path))
        mapped[:, 0], mapped[:, -1] = o[:, 0], c[:, 0]
        bo, bc = mapped[:, :-1], mapped[:, 1:]
        # wicks: a random fraction of the bar's own range, clipped to the day's range
        span = np.abs(bc - bo) + (h - lo) * 0.002
        bh = np.minimum(np.maximum(bo, bc) + span * rng.uniform(0, 0.6, (m, n)), h)
        bl = np.maximum(np.minimum(bo, bc) - span * rng.uniform(0, 0.6, (m, n)), lo)
        # the bar holding the path's extreme touches the day's extreme exactly
        rows = np.arange(m)
        kh = np.minimum(np.argmax(mapped, axis=1), n - 1)
        kl = np.minimum(np.argmin(mapped, axis=1), n - 1)
        bh[rows, kh] = h[:, 0]
        bl[rows, kl] = lo[:, 0]
        w = _u_shape(n)[None, :] * rng.lognormal(0.0, 0.25, (m, n))
        bv = np.floor(vol * w / w.sum(axis=1, keepdims=True))
        starts = opens_utc.to_numpy(dtype="datetime64[ns]")[sel][:, None] + np.arange(n)[None, :] * step
        pieces_idx.append(starts.ravel())
        pieces.append(np.stack([bo.ravel(), bh.ravel(), bl.ravel(), bc.ravel(), bv.ravel()], axis=1))
    idx = np.concatenate(pieces_idx)
    vals = np.concatenate(pieces)
    order = np.argsort(idx, kind="stable")
    index = pd.DatetimeIndex(idx[order]).tz_localize("UTC").tz_convert(tz)
    index.name = "datetime"
    out = pd.DataFrame(vals[order], index=index, columns=["open", "high", "low", "close", "volume"])
    out.attrs.update(symbol=daily.attrs.get("symbol", SAMPLE_SYMBOL), calendar=calendar, interval=interval,
                     synthetic_intraday=True, seed=seed, source=SAMPLE_SOURCE)
    return out


@lru_cache(maxsize=4)
def _sample_cached(seed: int, interval: int) -> pd.DataFrame:
    return generate_intraday(load_daily(), seed=seed, interval=interval)


def sample_intraday(start: Optional[str] = None, end: Optional[str] = None, seed: int = 42,
                    interval: int = 5) -> pd.DataFrame:
    """Synthetic intraday bars of the embedded sample between ``start`` and ``end`` (dates, inclusive).

    Always a slice of the whole 20-year generation, so a sub-range has the same bars as the full set.
    """
    full = _sample_cached(seed, interval)
    df = full
    if start is not None:
        df = df[df.index >= pd.Timestamp(start).tz_localize(full.index.tz)]
    if end is not None:
        df = df[df.index < pd.Timestamp(end).tz_localize(full.index.tz) + pd.Timedelta(days=1)]
    if df.empty:
        raise ValueError(f"start/end: the sample covers 1999-01-04..2018-12-31, got {start}..{end}")
    df = df.copy()
    df.attrs = dict(full.attrs)
    return df
