"""Causal feature pipeline: daily indicators, the running daily candle, intraday features, LTC sequences.

Everything is vectorised over the whole history (``ta`` indicators picked one
by one — never ``add_all_ta_features``, whose Parabolic SAR is a Python loop).

Timing rules (the causality test in ``tests/test_features.py`` checks them by
recomputing on truncated histories):

* **daily features** of session ``d`` use only daily bars of sessions strictly
  before ``d`` (lag 1 session); calendar one-hots describe ``d`` itself, which
  is known in advance;
* **intraday features** of a bar use that bar (at its close) and earlier bars;
* :func:`build_features` gives one row per session by default
  (``per="session"``): the decision-time row, i.e. the values at the close of
  bar ``decision_bar`` (0-based; default 16 = after the first 17 candles, the
  original's decision time). ``per="bar"`` gives one row per bar instead.

:func:`feature_table` documents every column (name, family, formula, lag); it
is generated from the same specification the code builds the columns from.

Modules: :mod:`mltrade.models.feature_specs` (the specification and :func:`feature_table`),
:mod:`mltrade.models.feature_bars` (checking and tagging bars, session bars),
:mod:`mltrade.models.intraday_features` (the running daily candle and the intraday columns); this module
builds the daily features, the LTC sequences and the whole set (:func:`build_features`).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from ta.momentum import RSIIndicator, StochasticOscillator, WilliamsRIndicator
from ta.trend import CCIIndicator, MACD
from ta.volatility import BollingerBands

# this module is the face of the feature pipeline: the specification, the bar helpers and the intraday
# features live in their own modules and are re-exported here
from mltrade.models.feature_bars import _check_bars, _tags, infer_interval, session_daily  # noqa: F401
from mltrade.models.feature_specs import (DAILY_COLUMNS, FEATURE_COLUMNS, INTRADAY_COLUMNS,  # noqa: F401
                                          LTC_VALUES, MA_WINDOWS, MONTHS, ORIGINAL_DAILY_COLUMNS, PRICES,
                                          RSI_WINDOWS, WEEKDAYS, feature_table)
from mltrade.models.intraday_features import intraday_features, running_daily_candle  # noqa: F401
from mltrade.products import barrier_from_distance, fair_value



# ---------------------------------------------------------------------------
# Daily features
# ---------------------------------------------------------------------------
def _daily_raw(daily: pd.DataFrame) -> pd.DataFrame:
    """Indicator values at each daily row's close (NOT lagged); columns = numeric daily features."""
    o, h, l, c = (daily[p].astype(float) for p in PRICES)
    cols = {}
    smas = {w: c.rolling(w, min_periods=w).mean() for w in MA_WINDOWS}
    for p, s in zip(PRICES, (o, h, l, c)):
        for w in MA_WINDOWS:
            cols[f"d_{p}_sma{w}"] = s / smas[w] - 1
    for w in MA_WINDOWS:
        cols[f"d_sma{w}_slope5"] = smas[w] / smas[w].shift(5) - 1
    for p, s in zip(PRICES, (o, h, l, c)):
        cols[f"d_{p}_chg1"] = s / s.shift(1) - 1
    cols["d_gap"] = o / c.shift(1) - 1
    cols["d_range"] = (h - l) / o
    cols["d_body"] = c / o - 1
    cols["d_upper_wick"] = (h - np.maximum(o, c)) / o
    cols["d_lower_wick"] = (np.minimum(o, c) - l) / o
    lc = np.log(c)
    r1 = lc.diff()
    for n in (2, 5, 10, 20):
        cols[f"d_ret{n}"] = lc.diff(n)
    for n in (5, 10, 20):
        cols[f"d_vol{n}"] = r1.rolling(n, min_periods=n).std()
    for n in RSI_WINDOWS:
        rsi = RSIIndicator(c, window=n).rsi() / 100
        cols[f"d_rsi{n}"] = rsi
        cols[f"d_rsi{n}_chg"] = rsi.diff()
    rsio = RSIIndicator(o, window=14).rsi() / 100
    cols["d_rsi14_open"] = rsio
    cols["d_rsi14_open_chg"] = rsio.diff()
    ema = {n: c.ewm(span=n, adjust=False, min_periods=n).mean() for n in (12, 20, 26, 50)}
    cols["d_ema12_ema26"] = ema[12] / ema[26] - 1
    cols["d_close_ema20"] = c / ema[20] - 1
    cols["d_close_ema50"] = c / ema[50] - 1
    bb = BollingerBands(c, window=20, window_dev=2)
    cols["d_bb_width"] = (bb.bollinger_hband() - bb.bollinger_lband()) / bb.bollinger_mavg()
    cols["d_bb_pband"] = bb.bollinger_pband()
    st = StochasticOscillator(h, l, c, window=14, smooth_window=3)
    k, d = st.stoch() / 100, st.stoch_signal() / 100
    cols["d_stoch_k"], cols["d_stoch_d"], cols["d_stoch_kd"] = k, d, k - d
    m = MACD(c, window_slow=26, window_fast=12, window_sign=9)
    cols["d_macd"] = m.macd() / c
    cols["d_macd_signal"] = m.macd_signal() / c
    cols["d_macd_diff"] = m.macd_diff() / c
    for n in (14, 5):
        cols[f"d_atr{n}"] = wilder_atr(h, l, c, n) / c
    cols["d_cci20"] = CCIIndicator(h, l, c, window=20).cci() / 100
    cols["d_willr14"] = WilliamsRIndicator(h, l, c, lbp=14).williams_r() / 100
    s5, s10 = c.rolling(5, min_periods=5).mean(), c.rolling(10, min_periods=10).mean()
    cols["d_sma5_sma10_sign"] = np.sign(s5 - s10)
    cols["d_sma5_sma10"] = s5 / s10 - 1
    raw = pd.DataFrame(cols, index=daily.index)
    return raw.replace([np.inf, -np.inf], np.nan)


def wilder_atr(high: pd.Series, low: pd.Series, close: pd.Series, window: int = 14) -> pd.Series:
    """Wilder's ATR (same values as ``ta``'s AverageTrueRange), vectorised, NaN during warm-up."""
    pc = close.shift(1)
    tr = pd.concat([high - low, (high - pc).abs(), (low - pc).abs()], axis=1).max(axis=1)
    seed = tr.copy()
    seed.iloc[:window] = np.nan
    if len(tr) >= window:
        seed.iloc[window - 1] = tr.iloc[:window].mean()
    return seed.ewm(alpha=1.0 / window, adjust=False).mean()


def calendar_onehots(dates: pd.DatetimeIndex) -> pd.DataFrame:
    """One-hot weekday (Mon-Fri), month, day of month and month of quarter of each date."""
    dates = pd.DatetimeIndex(dates)
    wd = dates.day_of_week.to_numpy()
    mo = dates.month.to_numpy()
    dm = dates.day.to_numpy()
    mq = (mo - 1) % 3 + 1
    blocks = [(wd[:, None] == np.arange(5)[None, :]),
              (mo[:, None] == np.arange(1, 13)[None, :]),
              (dm[:, None] == np.arange(1, 32)[None, :]),
              (mq[:, None] == np.arange(1, 4)[None, :])]
    names = ([f"wd_{w}" for w in WEEKDAYS] + [f"month_{m}" for m in MONTHS]
             + [f"dom_{d}" for d in range(1, 32)] + [f"moq_{q}" for q in range(1, 4)])
    return pd.DataFrame(np.hstack(blocks).astype(float), index=dates, columns=names)


def daily_features(daily: pd.DataFrame, dates: Optional[Sequence] = None) -> pd.DataFrame:
    """Daily features for each session date, using only daily rows strictly before it (see module doc).

    ``dates`` defaults to ``daily.index``; any dates may be given (each takes the
    last daily row before it, so gaps and holidays are handled).
    """
    _check_bars(daily, "daily")
    idx = pd.DatetimeIndex(daily.index)
    if idx.tz is not None:
        idx = idx.tz_localize(None)
    idx = idx.normalize()
    d = daily.set_axis(idx)
    raw = _daily_raw(d)
    target = idx if dates is None else pd.DatetimeIndex(dates).tz_localize(None).normalize()
    pos = np.searchsorted(idx.to_numpy(), target.to_numpy(), side="left") - 1
    vals = raw.to_numpy()
    lagged = np.full((len(target), vals.shape[1]), np.nan)
    ok = pos >= 0
    lagged[ok] = vals[pos[ok]]
    out = pd.DataFrame(lagged, index=target, columns=raw.columns)
    out = pd.concat([out, calendar_onehots(target)], axis=1)
    out.index.name = "date"
    return out[DAILY_COLUMNS]


# ---------------------------------------------------------------------------
# LTC sequences
# ---------------------------------------------------------------------------
def ltc_sequences(bars: pd.DataFrame, n_candles: int = 17, distance: float = 0.04, ratio: float = 0.01,
                  calendar: str = "XNAS", interval: Optional[int] = None
                  ) -> Tuple[pd.DatetimeIndex, np.ndarray]:
    """First ``n_candles`` candles of each session as certificate percent changes.

    Returns ``(session_dates, X)`` with ``X[s, i] = (long_high, long_low,
    long_close, short_high, short_low, short_close)``: the price of a turbo whose
    barrier is ``distance`` from the session open, at candle ``i``'s high/low/
    close, divided by its price at the open, minus 1 (priced with
    :mod:`mltrade.products`; -1 from the candle that knocks it out on).
    Sessions with fewer than ``n_candles`` bars are skipped.
    """
    _check_bars(bars)
    if n_candles < 1:
        raise ValueError(f"n_candles: expected >= 1, got {n_candles!r}")
    if not (0 < distance < 1):
        raise ValueError(f"distance: expected a fraction in (0, 1), got {distance!r}")
    tags, _ = _tags(bars, calendar, interval)
    sel = tags.in_session & (tags.bar < n_candles)
    key = tags.session[sel]
    barno = tags.bar[sel]
    vals = bars[list(PRICES)].to_numpy(float)[sel]
    uniq, start, counts = np.unique(key, return_index=True, return_counts=True)
    full = counts == n_candles
    # a complete session has bars 0..n-1 in order
    if full.any():
        rows = start[full][:, None] + np.arange(n_candles)[None, :]
        full_idx = np.nonzero(full)[0]
        okseq = (barno[rows] == np.arange(n_candles)[None, :]).all(axis=1)
        rows, full_idx = rows[okseq], full_idx[okseq]
    else:
        rows, full_idx = np.zeros((0, n_candles), dtype=int), np.array([], dtype=int)
    cube = vals[rows]  # (S, N, 4) open high low close
    s0 = cube[:, 0, 0][:, None]
    out = np.empty((len(rows), n_candles, 6))
    for j, d in enumerate((1, -1)):
        k = barrier_from_distance(s0, d, distance)
        v0 = fair_value(d, s0, k, ratio)
        knocked = np.maximum.accumulate(np.where(d > 0, cube[:, :, 2] <= k, cube[:, :, 1] >= k), axis=1)
        for i, col in enumerate((1, 2, 3)):  # high, low, close
            v = fair_value(d, cube[:, :, col], k, ratio) / v0 - 1
            out[:, :, 3 * j + i] = np.where(knocked, -1.0, v)
    dates = pd.DatetimeIndex(uniq[full_idx].astype("datetime64[ns]"), name="date")
    return dates, out


# ---------------------------------------------------------------------------
# Everything together
# ---------------------------------------------------------------------------
def build_features(bars: pd.DataFrame, daily: Optional[pd.DataFrame] = None, calendar: str = "XNAS",
                   interval: Optional[int] = None, per: str = "session", decision_bar: int = 16,
                   distance: float = 0.04, ratio: float = 0.01) -> pd.DataFrame:
    """The default 176-column feature set (:data:`FEATURE_COLUMNS`, in that order).

    ``per="session"`` (default): one row per session, indexed by session date,
    holding the values known at the close of bar ``decision_bar``.
    ``per="bar"``: one row per in-session bar, indexed by bar start time.
    ``daily`` (real daily bars) is optional; without it the daily bars are
    aggregated from ``bars``. Either way a session's daily features use only
    sessions before it. Warm-up rows contain NaN (long moving averages).
    """
    if per not in ("session", "bar"):
        raise ValueError(f"per: expected 'session' or 'bar', got {per!r}")
    intra = intraday_features(bars, calendar, interval, distance, ratio)
    if daily is None:
        daily = session_daily(bars, calendar, interval)
    if per == "session":
        intra = intra[intra["session_bar"].to_numpy() == decision_bar]
    sess = pd.DatetimeIndex(intra["session"])
    uniq = sess.unique()
    dfeat = daily_features(daily, uniq)
    pos = uniq.get_indexer(sess)
    dvals = dfeat.to_numpy()[pos]
    out = pd.DataFrame(np.hstack([dvals, intra[INTRADAY_COLUMNS].to_numpy()]), columns=FEATURE_COLUMNS,
                       index=intra.index if per == "bar" else pd.DatetimeIndex(sess, name="date"))
    if per == "bar":
        out.index.name = "datetime"
    out.attrs.update(per=per, decision_bar=decision_bar, calendar=calendar)
    return out


__all__ = ["build_features", "daily_features", "intraday_features", "running_daily_candle", "ltc_sequences",
           "feature_table", "calendar_onehots", "session_daily", "infer_interval", "FEATURE_COLUMNS",
           "DAILY_COLUMNS", "INTRADAY_COLUMNS", "ORIGINAL_DAILY_COLUMNS", "LTC_VALUES", "wilder_atr"]
