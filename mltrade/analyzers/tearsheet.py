"""Tearsheet figures of one run: drawdown periods, tail risk, trade statistics, beta/alpha to the index.

Everything is computed here from the per-bar account value, the index close and the round trips
(numpy/pandas only); :func:`tearsheet` returns the dict that ``summary.json["tearsheet"]`` holds
for the strategy and each baseline. Definitions: docs/metrics.md ("Tearsheet").
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

from mltrade.analyzers.performance import daily_returns

#: sessions a year (annualisation of Sharpe, volatility and alpha)
PERIODS = 252
#: sessions in the rolling Sharpe / volatility window (about six months)
ROLLING_WINDOW = 126
#: tail probability of the value at risk and the expected shortfall
VAR_LEVEL = 0.05
#: rows of the worst-drawdowns table
TOP_DRAWDOWNS = 5


def session_closes(values: pd.Series) -> pd.Series:
    """The last value of each session (trading day), indexed by the session's date."""
    v = values.dropna()
    return v.groupby(v.index.normalize()).last()


def index_returns(close: pd.Series) -> pd.Series:
    """Session returns of the index: each session's last close against the one before; the first
    session's against its first bar's close (so strategy and index returns cover the same sessions)."""
    c = close.dropna()
    closes = session_closes(c)
    return daily_returns(closes, float(c.iloc[0])) if len(c) else closes


def drawdown_periods(values: pd.Series, top: int = TOP_DRAWDOWNS) -> List[dict]:
    """The ``top`` deepest drawdowns of a value series: ``start`` (the peak before it), ``trough``,
    ``recovery`` (the first time the value regains the peak, ``None`` while under water), ``depth``
    (trough / peak − 1, negative), ``length`` (calendar days from peak to recovery or the last point)
    and ``sessions`` (trading days from peak to recovery or the last point)."""
    v = values.dropna()
    if len(v) < 2:
        return []
    arr = v.to_numpy(float)
    peak = np.maximum.accumulate(arr)
    under = arr < peak
    out = []
    i, n = 0, len(arr)
    days = v.index.normalize()
    while i < n:
        if not under[i]:
            i += 1
            continue
        s = i - 1                       # the peak bar
        j = i
        while j < n and under[j]:
            j += 1
        seg = arr[i:j]
        k = i + int(np.argmin(seg))
        end = j if j < n else n - 1
        out.append({"start": str(v.index[s]), "trough": str(v.index[k]),
                    "recovery": str(v.index[j]) if j < n else None,
                    "depth": float(arr[k] / peak[k] - 1.0),
                    "length": int((v.index[end] - v.index[s]).days),
                    "sessions": int(len(np.unique(days[s:end + 1])) - 1)})
        i = j
    return sorted(out, key=lambda d: d["depth"])[:top]


def streaks(flags: np.ndarray) -> int:
    """The longest run of ``True`` in ``flags``."""
    best = cur = 0
    for f in flags:
        cur = cur + 1 if f else 0
        best = max(best, cur)
    return best


def _f(x) -> Optional[float]:
    """A finite float, or ``None`` (JSON null) for an undefined figure."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def return_stats(rets: pd.Series, bench: Optional[pd.Series] = None) -> dict:
    """Figures of a daily return series (and its beta / alpha to ``bench`` on the same sessions)."""
    r = rets.dropna()
    n = len(r)
    out: Dict[str, Optional[float]] = {"sessions": n}
    sd = r.std(ddof=1) if n > 1 else float("nan")
    out["volatility"] = _f(sd * math.sqrt(PERIODS)) if n > 1 else None
    out["skew"] = _f(r.skew()) if n > 2 else None
    out["kurtosis"] = _f(r.kurt()) if n > 3 else None
    if n:
        var = float(np.percentile(r.to_numpy(), 100 * VAR_LEVEL))
        cut = int((n - 1) * VAR_LEVEL)
        out["var_95"] = _f(var)
        out["cvar_95"] = _f(np.mean(np.partition(r.to_numpy(), cut)[:cut + 1]))
        out["best_session"] = _f(r.max())
        out["worst_session"] = _f(r.min())
        out["best_session_date"] = str(r.idxmax().date())
        out["worst_session_date"] = str(r.idxmin().date())
        out["positive_sessions"] = _f((r > 0).mean())
    else:
        for k in ("var_95", "cvar_95", "best_session", "worst_session", "best_session_date",
                  "worst_session_date", "positive_sessions"):
            out[k] = None
    out["beta"] = out["alpha"] = out["correlation"] = None
    if bench is not None:
        both = pd.concat([r, bench], axis=1, join="inner").dropna()
        if len(both) > 2:
            cov = np.cov(both.iloc[:, 0].to_numpy(), both.iloc[:, 1].to_numpy(), ddof=1)
            if cov[1, 1] > 0:
                beta = cov[0, 1] / cov[1, 1]
                out["beta"] = _f(beta)
                out["alpha"] = _f((both.iloc[:, 0].mean() - beta * both.iloc[:, 1].mean()) * PERIODS)
                if cov[0, 0] > 0:
                    out["correlation"] = _f(cov[0, 1] / math.sqrt(cov[0, 0] * cov[1, 1]))
    return out


def trade_stats(trades: Optional[pd.DataFrame]) -> dict:
    """Profit factor, expectancy, average win / loss, best / worst trade, streaks and durations."""
    keys = ("profit_factor", "expectancy", "expectancy_return", "avg_win", "avg_loss", "avg_win_return",
            "avg_loss_return", "best_trade", "worst_trade", "max_win_streak", "max_loss_streak",
            "avg_trade_hours", "median_trade_hours", "max_trade_hours", "avg_trade_bars")
    out: Dict[str, Optional[float]] = {k: None for k in keys}
    if trades is None or not len(trades):
        out["max_win_streak"] = out["max_loss_streak"] = 0
        return out
    pnl = pd.to_numeric(trades["pnl"], errors="coerce").fillna(0.0).to_numpy(float)
    ret = pd.to_numeric(trades["return"], errors="coerce").to_numpy(float) if "return" in trades else pnl * np.nan
    win = pnl > 0
    gross_win, gross_loss = pnl[win].sum(), -pnl[~win].sum()
    out["profit_factor"] = _f(gross_win / gross_loss) if gross_loss > 0 else None
    out["expectancy"] = _f(pnl.mean())
    out["expectancy_return"] = _f(np.nanmean(ret)) if np.isfinite(ret).any() else None
    out["avg_win"] = _f(pnl[win].mean()) if win.any() else None
    out["avg_loss"] = _f(pnl[~win].mean()) if (~win).any() else None
    if np.isfinite(ret).any():
        out["avg_win_return"] = _f(np.nanmean(ret[win])) if win.any() else None
        out["avg_loss_return"] = _f(np.nanmean(ret[~win])) if (~win).any() else None
        out["best_trade"] = _f(np.nanmax(ret))
        out["worst_trade"] = _f(np.nanmin(ret))
    out["max_win_streak"] = streaks(win)
    out["max_loss_streak"] = streaks(~win)
    if "entry_time" in trades and "exit_time" in trades:
        hours = (pd.to_datetime(trades["exit_time"]) - pd.to_datetime(trades["entry_time"])).dt.total_seconds() / 3600
        out["avg_trade_hours"] = _f(hours.mean())
        out["median_trade_hours"] = _f(hours.median())
        out["max_trade_hours"] = _f(hours.max())
    if "bars" in trades:
        out["avg_trade_bars"] = _f(pd.to_numeric(trades["bars"], errors="coerce").mean())
    return out


def period_returns(values: pd.Series, start_cash: float, freq: str) -> pd.Series:
    """Returns per calendar period (``"ME"`` months, ``"YE"`` years) of the session closes; the first
    period's against the start cash."""
    closes = session_closes(values)
    ends = closes.resample(freq).last().dropna()
    return daily_returns(ends, start_cash)


def tearsheet(values: pd.Series, start_cash: float, trades: Optional[pd.DataFrame] = None,
              close: Optional[pd.Series] = None) -> dict:
    """The tearsheet of one account: per-bar ``values``, the ``start_cash``, its round trips and the
    index ``close`` on the same bars (for beta and alpha). All returns are fractions, not %."""
    v = values.dropna()
    rets = daily_returns(session_closes(v), start_cash)
    bench = index_returns(close) if close is not None and len(close.dropna()) else None
    out = return_stats(rets, bench)
    final = float(v.iloc[-1]) if len(v) else start_cash
    days = max((v.index[-1] - v.index[0]).days, 1) if len(v) else 1
    cagr = (final / start_cash) ** (365.25 / days) - 1.0 if final > 0 else -1.0
    mdd = float((v / np.maximum(v.cummax(), 1e-300) - 1.0).min()) if len(v) else 0.0
    out["calmar"] = _f(cagr / abs(mdd)) if mdd < 0 else None
    out.update(trade_stats(trades))
    out["yearly_returns"] = {str(t.year): _f(x) for t, x in period_returns(v, start_cash, "YE").items()} if len(v) else {}
    out["drawdowns"] = drawdown_periods(v)
    return out


def rolling_stats(values: pd.Series, start_cash: float, window: int = ROLLING_WINDOW) -> pd.DataFrame:
    """Rolling Sharpe and annualised volatility over ``window`` sessions (columns ``sharpe``, ``volatility``)."""
    rets = daily_returns(session_closes(values.dropna()), start_cash)
    roll = rets.rolling(window, min_periods=window)
    sd = roll.std(ddof=1)
    return pd.DataFrame({"sharpe": roll.mean() / sd.where(sd > 0) * math.sqrt(PERIODS),
                         "volatility": sd * math.sqrt(PERIODS)})


def tearsheets(bars: pd.DataFrame, start_cash: float, trades: Optional[pd.DataFrame] = None,
               baseline_trades: Optional[Dict[str, pd.DataFrame]] = None) -> Dict[str, dict]:
    """``{"strategy": ..., <baseline>: ...}`` from the report's per-bar table (``value``, ``close`` and
    ``value_<baseline>`` columns, as in equity.csv) and the round trips of each."""
    close = bars["close"] if "close" in bars else None
    out = {"strategy": tearsheet(bars["value"], start_cash, trades, close)}
    for c in bars.columns:
        if c.startswith("value_"):
            name = c[len("value_"):]
            out[name] = tearsheet(bars[c], start_cash, (baseline_trades or {}).get(name), close)
    return out
