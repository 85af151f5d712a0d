"""Intraday features of :mod:`mltrade.models.features`: the running daily candle and the per-bar intraday
columns (:data:`~mltrade.models.feature_specs.INTRADAY_COLUMNS`), each known at its bar's close, built group
by group (running candle against the previous session, returns and volatility, ranges, trend and oscillators,
the session's certificates)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd
from ta.momentum import RSIIndicator, StochasticOscillator
from ta.volatility import BollingerBands

from mltrade.models.feature_bars import _check_bars, _div, _tags
from mltrade.models.feature_specs import INTRADAY_COLUMNS, PRICES
from mltrade.products import barrier_from_distance, fair_value


def running_daily_candle(bars: pd.DataFrame, calendar: str = "XNAS",
                         interval: Optional[int] = None) -> pd.DataFrame:
    """Cumulative session open/high/low/close at every bar (groupby cummax/cummin, one pass).

    Bars outside a regular session are dropped. Columns: ``session`` (date),
    ``bar`` (0-based), ``run_open``, ``run_high``, ``run_low``, ``run_close``.
    """
    _check_bars(bars)
    tags, _ = _tags(bars, calendar, interval)
    inside = tags.in_session
    b = bars[inside]
    key = tags.session[inside]
    g_high = b["high"].groupby(key)
    out = pd.DataFrame({"session": pd.DatetimeIndex(key.astype("datetime64[ns]")),
                        "bar": tags.bar[inside],
                        "run_open": b["open"].groupby(key).transform("first"),
                        "run_high": g_high.cummax(),
                        "run_low": b["low"].groupby(key).cummin(),
                        "run_close": b["close"]}, index=b.index)
    return out


def intraday_features(bars: pd.DataFrame, calendar: str = "XNAS", interval: Optional[int] = None,
                      distance: float = 0.04, ratio: float = 0.01) -> pd.DataFrame:
    """Per-bar intraday features (in-session bars only), each known at the bar's close."""
    _check_bars(bars)
    tags, interval = _tags(bars, calendar, interval)
    inside = tags.in_session
    b = bars[inside]
    key = tags.session[inside]
    barno = tags.bar[inside]
    left = tags.left[inside]
    o, h, l, c = (b[p].to_numpy(float) for p in PRICES)
    run = running_daily_candle(b, calendar, interval)
    ro, rh, rl = run["run_open"].to_numpy(), run["run_high"].to_numpy(), run["run_low"].to_numpy()
    sess = pd.DatetimeIndex(key.astype("datetime64[ns]"))
    first_of = np.r_[True, key[1:] != key[:-1]]
    sid = np.cumsum(first_of) - 1
    cols = _candle_columns(key, first_of, sid, h, l, c, ro, rh, rl)
    cols.update(_return_columns(first_of, sid, barno, o, c))
    cols.update(_range_columns(first_of, sid, barno, left, o, h, l, c))
    cols.update(_trend_columns(h, l, c))
    cols.update(_certificate_columns(sid, h, l, c, ro, distance, ratio))
    out = pd.DataFrame(cols, index=b.index)
    out = out.replace([np.inf, -np.inf], np.nan)
    out.insert(0, "session_bar", barno)
    out.insert(0, "session", sess)
    return out[["session", "session_bar"] + INTRADAY_COLUMNS]


def _candle_columns(key: np.ndarray, first_of: np.ndarray, sid: np.ndarray, h: np.ndarray, l: np.ndarray,
                    c: np.ndarray, ro: np.ndarray, rh: np.ndarray, rl: np.ndarray) -> dict:
    """The running candle against its open and against the previous session's close, high and low."""
    # previous session's close/high/low mapped onto each bar
    last_idx = np.r_[np.nonzero(first_of)[0][1:] - 1, len(key) - 1]
    s_close = c[last_idx]
    s_high = pd.Series(h).groupby(sid).max().to_numpy()
    s_low = pd.Series(l).groupby(sid).min().to_numpy()
    prev = lambda a: np.r_[np.nan, a[:-1]][sid]  # noqa: E731
    p_close, p_high, p_low = prev(s_close), prev(s_high), prev(s_low)
    cols = {}
    cols["i_run_high_open"] = rh / ro - 1
    cols["i_run_low_open"] = rl / ro - 1
    cols["i_run_close_open"] = c / ro - 1
    cols["i_run_range"] = (rh - rl) / ro
    rng = rh - rl
    cols["i_run_pos"] = np.where(rng > 0, _div(c - rl, rng), 0.5)
    cols["i_gap"] = ro / p_close - 1
    cols["i_close_prevclose"] = c / p_close - 1
    cols["i_run_high_prevhigh"] = rh / p_high - 1
    cols["i_run_low_prevlow"] = rl / p_low - 1
    return cols


def _return_columns(first_of: np.ndarray, sid: np.ndarray, barno: np.ndarray, o: np.ndarray,
                    c: np.ndarray) -> dict:
    """Log returns over 1..24 bars, their lags, rolling and session-so-far volatility."""
    cols = {}
    cs = pd.Series(c)
    lc = np.log(cs)
    r1 = lc.diff()
    for k in (1, 2, 3, 6, 12, 24):
        cols[f"i_ret{k}"] = lc.diff(k).to_numpy()
    for k in range(1, 13):
        cols[f"i_ret_lag{k}"] = r1.shift(k).to_numpy()
    for n in (6, 12, 24):
        cols[f"i_vol{n}"] = r1.rolling(n, min_periods=n).std().to_numpy()
    # session-so-far realised volatility: first return of a session is close/open
    rs = np.where(first_of, np.log(c / o), r1.to_numpy())
    g = pd.Series(rs).groupby(sid)
    n_ = barno + 1.0
    s1, s2 = g.cumsum().to_numpy(), pd.Series(rs * rs).groupby(sid).cumsum().to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (s2 - s1 * s1 / n_) / (n_ - 1)
    cols["i_vol_session"] = np.where(n_ > 1, np.sqrt(np.maximum(var, 0)), np.nan)
    return cols


def _range_columns(first_of: np.ndarray, sid: np.ndarray, barno: np.ndarray, left: np.ndarray, o: np.ndarray,
                   h: np.ndarray, l: np.ndarray, c: np.ndarray) -> dict:
    """True ranges (rolling and session-so-far), the bar's body and wicks, the session's elapsed fraction."""
    cols = {}
    n_ = barno + 1.0
    # true range; the first bar of a session uses its own open instead of yesterday's close
    pc = np.where(first_of, o, np.r_[np.nan, c[:-1]])
    tr = (np.maximum(h, pc) - np.minimum(l, pc)) / c
    trs = pd.Series(tr)
    for n in (3, 6, 12):
        cols[f"i_atr{n}"] = trs.rolling(n, min_periods=n).mean().to_numpy()
    cols["i_atr_session"] = trs.groupby(sid).cumsum().to_numpy() / n_
    cols["i_body"] = c / o - 1
    cols["i_bar_range"] = (h - l) / o
    cols["i_upper_wick"] = (h - np.maximum(o, c)) / o
    cols["i_lower_wick"] = (np.minimum(o, c) - l) / o
    cols["i_session_frac"] = barno / (barno + left + 1.0)
    return cols


def _trend_columns(h: np.ndarray, l: np.ndarray, c: np.ndarray) -> dict:
    """Close against its moving averages and recent highs/lows, RSI, EMA ratio, Bollinger %B, stochastic."""
    cols = {}
    cs = pd.Series(c)
    for n in (6, 12, 24, 48):
        cols[f"i_close_sma{n}"] = (cs / cs.rolling(n, min_periods=n).mean() - 1).to_numpy()
    hs, ls = pd.Series(h), pd.Series(l)
    for n in (12, 24):
        cols[f"i_high{n}_close"] = hs.rolling(n, min_periods=n).max().to_numpy() / c - 1
        cols[f"i_low{n}_close"] = ls.rolling(n, min_periods=n).min().to_numpy() / c - 1
    cols["i_rsi14"] = RSIIndicator(cs, window=14).rsi().to_numpy() / 100
    e6 = cs.ewm(span=6, adjust=False, min_periods=6).mean()
    e24 = cs.ewm(span=24, adjust=False, min_periods=24).mean()
    cols["i_ema6_ema24"] = (e6 / e24 - 1).to_numpy()
    cols["i_bb_pband"] = BollingerBands(cs, window=20, window_dev=2).bollinger_pband().to_numpy()
    cols["i_stoch_k"] = StochasticOscillator(hs, ls, cs, window=14, smooth_window=3).stoch().to_numpy() / 100
    return cols


def _certificate_columns(sid: np.ndarray, h: np.ndarray, l: np.ndarray, c: np.ndarray, ro: np.ndarray,
                         distance: float, ratio: float) -> dict:
    """The long and short turbo of the session (barrier ``distance`` from its open): price now / at the open
    - 1, -1 once knocked out."""
    cols = {}
    for name, d in (("i_cert_long", 1), ("i_cert_short", -1)):
        k_ = barrier_from_distance(ro, d, distance)
        knocked = pd.Series(np.where(d > 0, l <= k_, h >= k_)).groupby(sid).cummax().to_numpy()
        v0 = fair_value(d, ro, k_, ratio)
        cols[name] = np.where(knocked, -1.0, _div(fair_value(d, c, k_, ratio), v0) - 1)
    return cols
