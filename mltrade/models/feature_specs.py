"""The specification of the feature set (:mod:`mltrade.models.features`): one source of the column names, their
order and their documentation (name, family, formula, lag), from which the code builds the columns and
:func:`feature_table` documents them."""
from __future__ import annotations

from typing import List, Tuple

import pandas as pd

PRICES = ("open", "high", "low", "close")
MA_WINDOWS = (7, 14, 30, 10, 100, 200)
RSI_WINDOWS = (7, 14, 21)
LAG1 = "1 session (values of the previous session's close)"
LAG0_DAY = "0 (calendar of the session itself, known in advance)"
LAG0_BAR = "0 bars (known at the close of the bar)"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


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
