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
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from ta.momentum import RSIIndicator, StochasticOscillator, WilliamsRIndicator
from ta.trend import CCIIndicator, MACD
from ta.volatility import BollingerBands

from mltrade.calendars import tag_bars
from mltrade.products import barrier_from_distance, fair_value

PRICES = ("open", "high", "low", "close")
MA_WINDOWS = (7, 14, 30, 10, 100, 200)
RSI_WINDOWS = (7, 14, 21)
LAG1 = "1 session (values of the previous session's close)"
LAG0_DAY = "0 (calendar of the session itself, known in advance)"
LAG0_BAR = "0 bars (known at the close of the bar)"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


# ---------------------------------------------------------------------------
# Specification (single source of the column names, order and documentation)
# ---------------------------------------------------------------------------
def _daily_specs() -> List[Tuple[str, str, str, str]]:
    s: List[Tuple[str, str, str, str]] = []
    for p in PRICES:
        for w in MA_WINDOWS:
            s.append((f"d_{p}_sma{w}", "ma_ratio", f"{p} / SMA{w}(close) - 1", LAG1))
    for w in MA_WINDOWS:
        s.append((f"d_sma{w}_slope5", "ma_ratio", f"SMA{w}(close) / SMA{w}(close) 5 sessions earlier - 1",
                  LAG1))
    for p in PRICES:
        s.append((f"d_{p}_chg1", "price_change", f"{p} / previous session's {p} - 1", LAG1))
    s += [("d_gap", "price_change", "open / previous session's close - 1", LAG1),
          ("d_range", "candle", "(high - low) / open", LAG1),
          ("d_body", "candle", "close / open - 1", LAG1),
          ("d_upper_wick", "candle", "(high - max(open, close)) / open", LAG1),
          ("d_lower_wick", "candle", "(min(open, close) - low) / open", LAG1)]
    for n in (2, 5, 10, 20):
        s.append((f"d_ret{n}", "returns", f"log(close / close {n} sessions earlier)", LAG1))
    for n in (5, 10, 20):
        s.append((f"d_vol{n}", "volatility", f"std of the last {n} daily log returns", LAG1))
    for n in RSI_WINDOWS:
        s.append((f"d_rsi{n}", "rsi", f"RSI{n}(close) / 100 (ta.momentum.RSIIndicator)", LAG1))
        s.append((f"d_rsi{n}_chg", "rsi", f"RSI{n}(close)/100 minus its value one session earlier", LAG1))
    s += [("d_rsi14_open", "rsi", "RSI14(open) / 100", LAG1),
          ("d_rsi14_open_chg", "rsi", "RSI14(open)/100 minus its value one session earlier", LAG1),
          ("d_ema12_ema26", "ema", "EMA12(close) / EMA26(close) - 1", LAG1),
          ("d_close_ema20", "ema", "close / EMA20(close) - 1", LAG1),
          ("d_close_ema50", "ema", "close / EMA50(close) - 1", LAG1),
          ("d_bb_width", "bollinger", "(upper - lower) / middle of Bollinger(20, 2)", LAG1),
          ("d_bb_pband", "bollinger", "(close - lower) / (upper - lower) of Bollinger(20, 2)", LAG1),
          ("d_stoch_k", "stochastic", "Stochastic %K(14) / 100", LAG1),
          ("d_stoch_d", "stochastic", "Stochastic %D(14, 3) / 100", LAG1),
          ("d_stoch_kd", "stochastic", "(%K - %D) / 100", LAG1),
          ("d_macd", "macd", "MACD(12, 26) / close", LAG1),
          ("d_macd_signal", "macd", "MACD signal(9) / close", LAG1),
          ("d_macd_diff", "macd", "(MACD - signal) / close", LAG1),
          ("d_atr14", "atr", "ATR14 / close", LAG1),
          ("d_atr5", "atr", "ATR5 / close", LAG1),
          ("d_cci20", "cci", "CCI(20) / 100", LAG1),
          ("d_willr14", "williams", "Williams %R(14) / 100 (in [-1, 0])", LAG1),
          ("d_sma5_sma10_sign", "sma_cross", "sign(SMA5(close) - SMA10(close))", LAG1),
          ("d_sma5_sma10", "sma_cross", "SMA5(close) / SMA10(close) - 1", LAG1)]
    for i, wd in enumerate(WEEKDAYS):
        s.append((f"wd_{wd}", "calendar", f"1 if the session is a {wd} (weekday {i})", LAG0_DAY))
    for i, m in enumerate(MONTHS):
        s.append((f"month_{m}", "calendar", f"1 if the session is in month {i + 1}", LAG0_DAY))
    for d in range(1, 32):
        s.append((f"dom_{d}", "calendar", f"1 if the session is day {d} of its month", LAG0_DAY))
    for q in range(1, 4):
        s.append((f"moq_{q}", "calendar", f"1 if the session is in month {q} of its quarter", LAG0_DAY))
    return s


def _intraday_specs() -> List[Tuple[str, str, str, str]]:
    s = [("i_run_high_open", "running_candle", "session high so far / session open - 1", LAG0_BAR),
         ("i_run_low_open", "running_candle", "session low so far / session open - 1", LAG0_BAR),
         ("i_run_close_open", "running_candle", "close / session open - 1", LAG0_BAR),
         ("i_run_range", "running_candle", "(session high so far - session low so far) / session open",
          LAG0_BAR),
         ("i_run_pos", "running_candle", "(close - session low) / (session high - session low), 0.5 if flat",
          LAG0_BAR),
         ("i_gap", "running_candle", "session open / previous session's last close - 1", LAG0_BAR),
         ("i_close_prevclose", "running_candle", "close / previous session's last close - 1", LAG0_BAR),
         ("i_run_high_prevhigh", "running_candle", "session high so far / previous session's high - 1",
          LAG0_BAR),
         ("i_run_low_prevlow", "running_candle", "session low so far / previous session's low - 1", LAG0_BAR)]
    for k in (1, 2, 3, 6, 12, 24):
        s.append((f"i_ret{k}", "returns", f"log(close / close {k} bars earlier)", LAG0_BAR))
    for k in range(1, 13):
        s.append((f"i_ret_lag{k}", "returns", f"log return of the bar {k} bars earlier (close/close)",
                  f"{k} bars"))
    for n in (6, 12, 24):
        s.append((f"i_vol{n}", "volatility", f"std of the last {n} one-bar log returns", LAG0_BAR))
    s.append(("i_vol_session", "volatility",
              "std of the session's one-bar log returns so far (first: close/open)", LAG0_BAR))
    for n in (3, 6, 12):
        s.append((f"i_atr{n}", "early_atr", f"mean true range of the last {n} bars / close", LAG0_BAR))
    s.append(("i_atr_session", "early_atr",
              "mean true range of the session's bars so far / close (the original's early-session ATR)",
              LAG0_BAR))
    s += [("i_body", "bar", "close / open - 1 of the bar", LAG0_BAR),
          ("i_bar_range", "bar", "(high - low) / open of the bar", LAG0_BAR),
          ("i_upper_wick", "bar", "(high - max(open, close)) / open", LAG0_BAR),
          ("i_lower_wick", "bar", "(min(open, close) - low) / open", LAG0_BAR),
          ("i_session_frac", "position", "bar number / bars in the session (calendar, incl. early closes)",
           LAG0_BAR)]
    for n in (6, 12, 24, 48):
        s.append((f"i_close_sma{n}", "ma_ratio", f"close / SMA{n}(close over bars) - 1", LAG0_BAR))
    for n in (12, 24):
        s.append((f"i_high{n}_close", "range", f"max high of the last {n} bars / close - 1", LAG0_BAR))
        s.append((f"i_low{n}_close", "range", f"min low of the last {n} bars / close - 1", LAG0_BAR))
    s += [("i_rsi14", "oscillator", "RSI14 of bar closes / 100", LAG0_BAR),
          ("i_ema6_ema24", "oscillator", "EMA6 / EMA24 of bar closes - 1", LAG0_BAR),
          ("i_bb_pband", "oscillator", "Bollinger(20, 2) %B of bar closes", LAG0_BAR),
          ("i_stoch_k", "oscillator", "Stochastic %K(14) of bars / 100", LAG0_BAR),
          ("i_cert_long", "certificate",
           "long turbo (barrier `distance` below the session open) price at close / at open - 1, "
           "-1 once knocked out", LAG0_BAR),
          ("i_cert_short", "certificate",
           "short turbo (barrier `distance` above the session open) price at close / at open - 1, "
           "-1 once knocked out", LAG0_BAR)]
    return s


DAILY_SPECS = _daily_specs()
INTRADAY_SPECS = _intraday_specs()
DAILY_COLUMNS: List[str] = [n for n, *_ in DAILY_SPECS]
INTRADAY_COLUMNS: List[str] = [n for n, *_ in INTRADAY_SPECS]
#: the default feature set, in its stable order (176 columns)
FEATURE_COLUMNS: List[str] = DAILY_COLUMNS + INTRADAY_COLUMNS
#: the original system's dense-branch inputs (7/14/30-day MA ratios, RSI and its change, EMA ratio,
#: Bollinger, stochastic, SMA(5/10) cross, calendar one-hots): warm-up of 30 sessions,
#: for short histories where the 100/200-day averages are not yet defined
ORIGINAL_DAILY_COLUMNS: List[str] = (
    [f"d_{p}_sma{w}" for p in PRICES for w in (7, 14, 30)]
    + ["d_rsi14", "d_rsi14_chg", "d_rsi14_open", "d_rsi14_open_chg", "d_ema12_ema26", "d_bb_width",
       "d_bb_pband", "d_stoch_k", "d_stoch_d", "d_sma5_sma10_sign"]
    + [n for n, fam, *_ in DAILY_SPECS if fam == "calendar"])
LTC_VALUES = ("long_high", "long_low", "long_close", "short_high", "short_low", "short_close")
assert len(FEATURE_COLUMNS) == 176 and len(set(FEATURE_COLUMNS)) == 176, len(FEATURE_COLUMNS)


def feature_table() -> pd.DataFrame:
    """One row per feature of the default set: name, family, formula, lag (in column order)."""
    rows = [("daily",) + s for s in DAILY_SPECS] + [("intraday",) + s for s in INTRADAY_SPECS]
    t = pd.DataFrame(rows, columns=["group", "name", "family", "formula", "lag"])
    ltc = pd.DataFrame([("ltc", f"ltc_{v}", "ltc_sequence",
                         f"{v.split('_')[0]} turbo price at the candle's {v.split('_')[1]} / price at the "
                         f"session open - 1 (barrier `distance` from the open), for each of the first N "
                         f"candles; -1 once knocked out", "0 bars (candle i at its close)")
                        for v in LTC_VALUES], columns=t.columns)
    return pd.concat([t, ltc], ignore_index=True)


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
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
# Intraday features
# ---------------------------------------------------------------------------
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
    # previous session's close/high/low mapped onto each bar
    sess = pd.DatetimeIndex(key.astype("datetime64[ns]"))
    first_of = np.r_[True, key[1:] != key[:-1]]
    sid = np.cumsum(first_of) - 1
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
    for name, d in (("i_cert_long", 1), ("i_cert_short", -1)):
        k_ = barrier_from_distance(ro, d, distance)
        knocked = pd.Series(np.where(d > 0, l <= k_, h >= k_)).groupby(sid).cummax().to_numpy()
        v0 = fair_value(d, ro, k_, ratio)
        cols[name] = np.where(knocked, -1.0, _div(fair_value(d, c, k_, ratio), v0) - 1)
    out = pd.DataFrame(cols, index=b.index)
    out = out.replace([np.inf, -np.inf], np.nan)
    out.insert(0, "session_bar", barno)
    out.insert(0, "session", sess)
    return out[["session", "session_bar"] + INTRADAY_COLUMNS]


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
