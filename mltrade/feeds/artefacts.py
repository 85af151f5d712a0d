"""Measure intraday patterns in bars, and a null world to check a generator adds none of its own.

A *null world* is a market with no intraday pattern at all: a Brownian motion
in log price whose volatility varies from day to day, observed in 5-minute
bars (each bar's high and low drawn from the exact law of a Brownian bridge's
extremes). :func:`null_world` returns its bars and the daily bars cut from
them; a synthetic-intraday generator fed those daily bars should return bars
that look like the Brownian ones by every figure here:

* :func:`same_sign_share` — share of days whose move after bar ``k`` to the close has the
  sign of the move from the open up to bar ``k`` (0.5 without a pattern);
* :func:`momentum_sharpe` — annualised Sharpe of the cost-free rule "long if up after
  ``k`` bars, else short, hold to the close" (0 without a pattern);
* :func:`lag1_autocorr` — lag-1 autocorrelation of bar returns within a day;
* :func:`high_bar_index` and :func:`ks_statistic` — where in the day the high falls.

All figures use full-length sessions only (the most common bar count, 78 for XNAS 5-minute bars).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from mltrade.calendars import sessions, timezone_of

#: day-to-day volatility models of :func:`null_world`
NULL_VOLS: Tuple[str, ...] = ("sv", "constant", "garch", "lognormal")
#: GARCH(1,1) coefficients (alpha, beta) of the "garch" null world
GARCH_AB: Tuple[float, float] = (0.10, 0.88)
#: bar counts k at which the same-sign share and the momentum Sharpe are measured
DEFAULT_KS: Tuple[int, ...] = (3, 6, 12, 17, 24, 30, 40, 50, 60, 70)


@dataclass(frozen=True)
class DayMatrix:
    """Full-length sessions of a bars frame as (days, bars) arrays."""

    dates: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray


def day_matrix(bars: pd.DataFrame, nbars: Optional[int] = None) -> DayMatrix:
    """Reshape ``bars`` to one row per session of ``nbars`` bars (default: the most common count)."""
    if bars.empty:
        raise ValueError("bars: expected at least one bar")
    local = bars.index if bars.index.tz is None else bars.index.tz_localize(None)
    day = local.normalize().to_numpy(dtype="datetime64[D]")
    dates, start, counts = np.unique(day, return_index=True, return_counts=True)
    if nbars is None:
        vals, freq = np.unique(counts, return_counts=True)
        nbars = int(vals[np.argmax(freq)])
    keep = counts == nbars
    rows = start[keep][:, None] + np.arange(nbars)[None, :]
    cols = {c: bars[c].to_numpy(dtype=float)[rows] for c in ("open", "high", "low", "close")}
    return DayMatrix(dates[keep], cols["open"], cols["high"], cols["low"], cols["close"])


def _as_matrix(bars) -> DayMatrix:
    return bars if isinstance(bars, DayMatrix) else day_matrix(bars)


def same_sign_share(bars, k: int) -> float:
    """Share of days whose move after bar ``k`` has the sign of the move up to bar ``k`` (flat moves skipped)."""
    m = _as_matrix(bars)
    p = m.close[:, k - 1]
    up, after = np.sign(p - m.open[:, 0]), np.sign(m.close[:, -1] - p)
    ok = (up != 0) & (after != 0)
    return float(np.mean(up[ok] == after[ok])) if ok.any() else float("nan")


def momentum_sharpe(bars, k: int, periods: int = 252) -> float:
    """Annualised Sharpe (ddof 1) of "long if up after ``k`` bars else short, hold to the close", no costs."""
    m = _as_matrix(bars)
    p = m.close[:, k - 1]
    from mltrade.annualise import sharpe

    return sharpe(np.sign(p - m.open[:, 0]) * np.log(m.close[:, -1] / p), periods)


def bar_returns(bars) -> np.ndarray:
    """(days, bars) log returns within each session (the first against the session's open)."""
    m = _as_matrix(bars)
    prev = np.concatenate([m.open[:, :1], m.close[:, :-1]], axis=1)
    return np.log(m.close / prev)


def lag1_autocorr(bars) -> float:
    """Pearson correlation of consecutive bar returns within the same session (pooled over days)."""
    r = bar_returns(bars)
    return float(np.corrcoef(r[:, :-1].ravel(), r[:, 1:].ravel())[0, 1])


def high_bar_index(bars) -> np.ndarray:
    """0-based index of the bar holding each day's high (first one on ties)."""
    return np.argmax(_as_matrix(bars).high, axis=1)


def ks_statistic(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sample Kolmogorov–Smirnov distance sup |F_a - F_b|."""
    a, b = np.sort(np.asarray(a, dtype=float)), np.sort(np.asarray(b, dtype=float))
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(fa - fb)))


def ks_critical(n: int, m: int, alpha: float = 0.01) -> float:
    """Asymptotic critical value of the two-sample KS distance at level ``alpha``."""
    return float(np.sqrt(-0.5 * np.log(alpha / 2.0)) * np.sqrt((n + m) / (n * m)))


def artefact_figures(bars, ks: Iterable[int] = DEFAULT_KS,
                     reference: Optional[object] = None) -> Dict[str, object]:
    """All figures for ``bars``: per-k same-sign share and momentum Sharpe, lag-1 autocorrelation,
    and (with ``reference`` bars) the KS distance of the high's bar index with its 1% critical value."""
    m = _as_matrix(bars)
    ks = tuple(ks)
    out: Dict[str, object] = {
        "days": int(len(m.dates)),
        "same_sign": {k: same_sign_share(m, k) for k in ks},
        "momentum_sharpe": {k: momentum_sharpe(m, k) for k in ks},
        "lag1_autocorr": lag1_autocorr(m),
    }
    if reference is not None:
        ref = _as_matrix(reference)
        a, b = high_bar_index(m), high_bar_index(ref)
        out["high_bar_ks"] = ks_statistic(a, b)
        out["high_bar_ks_crit"] = ks_critical(len(a), len(b))
    return out


def bridge_extremes(a: np.ndarray, b: np.ndarray, var: np.ndarray, rng: np.random.Generator
                    ) -> Tuple[np.ndarray, np.ndarray]:
    """Exact draws of a Brownian bridge's maximum and minimum from ``a`` to ``b`` with total variance ``var``."""
    gap2 = (b - a) ** 2
    mid = 0.5 * (a + b)
    hi = mid + 0.5 * np.sqrt(gap2 + 2.0 * var * rng.standard_exponential(np.shape(a)))
    lo = mid - 0.5 * np.sqrt(gap2 + 2.0 * var * rng.standard_exponential(np.shape(a)))
    return hi, lo


def null_world(start: str = "1999-01-01", end: str = "2018-12-31", seed: int = 0, interval: int = 5,
               calendar: str = "XNAS", base_vol: float = 0.012, vol_of_vol: float = 0.45,
               price: float = 1000.0, vol: str = "sv") -> Tuple[pd.DataFrame, pd.DataFrame]:
    """A Brownian market with day-to-day varying volatility on the calendar's sessions.

    Returns ``(daily, bars)``: ``bars`` are ``interval``-minute bars of the Brownian paths
    (exchange-local index, like the sample's), ``daily`` the daily OHLCV rows cut from them
    (naive date index). ``vol`` sets each day's volatility (:data:`NULL_VOLS`): ``"sv"`` log
    volatility an AR(1) (persistence 0.97) plus daily noise, ``"constant"`` ``base_vol`` every day,
    ``"garch"`` a GARCH(1,1) on the daily moves (α 0.10, β 0.88, long-run ``base_vol``),
    ``"lognormal"`` independent lognormal days (log sd ``vol_of_vol``, mean ``base_vol``).
    """
    if vol not in NULL_VOLS:
        raise ValueError(f"vol: expected one of {list(NULL_VOLS)}, got {vol!r}")
    rng = np.random.default_rng(seed)
    sched = sessions(calendar, start, end)
    if sched.empty:
        raise ValueError(f"start/end: no {calendar} session in {start}..{end}")
    opens = sched["open"].to_numpy(dtype="datetime64[ns]")
    nbars = ((sched["close"] - sched["open"]) / pd.Timedelta(minutes=interval)).astype(int).to_numpy()
    nd = len(sched)
    rel, wick_hi, wick_lo = _unit_paths(nbars, rng)   # unit volatility: each day's scales them below
    unit_move = np.array([r[-1] for r in rel])
    unit_gap = rng.standard_normal(nd) * 0.3
    short = np.sqrt(nbars / nbars.max())          # a short session moves less
    eps = rng.standard_normal(nd)
    sig_day = _day_volatility(vol, base_vol, vol_of_vol, eps, rng, short, unit_gap, unit_move)
    sig_day = sig_day * short
    for i in range(nd):
        rel[i], wick_hi[i], wick_lo[i] = rel[i] * sig_day[i], wick_hi[i] * sig_day[i], wick_lo[i] * sig_day[i]
    day_move = unit_move * sig_day
    gaps = unit_gap * sig_day
    # each session opens at the previous close plus an overnight gap
    log_open = np.log(price) + np.cumsum(gaps) + np.concatenate([[0.0], np.cumsum(day_move)[:-1]])
    return _null_frames(sched, opens, nbars, interval, calendar, log_open, rel, wick_hi, wick_lo, vol, seed)


def _unit_paths(nbars: np.ndarray, rng: np.random.Generator) -> Tuple[list, list, list]:
    """Each session's unit-volatility Brownian path (log points from 0) and its bars' high and low wicks."""
    nd = len(nbars)
    rel, wick_hi, wick_lo = [None] * nd, [None] * nd, [None] * nd
    for n in np.unique(nbars):                       # vectorised over sessions of equal length
        sel = np.flatnonzero(nbars == n)
        s = np.full((len(sel), 1), 1.0 / np.sqrt(n))
        pts = np.concatenate([np.zeros((len(sel), 1)), np.cumsum(rng.standard_normal((len(sel), n)) * s, axis=1)],
                             axis=1)
        hi, lo = bridge_extremes(pts[:, :-1], pts[:, 1:], np.broadcast_to(s * s, (len(sel), n)), rng)
        for j, i in enumerate(sel):
            rel[i], wick_hi[i], wick_lo[i] = pts[j], hi[j], lo[j]
    return rel, wick_hi, wick_lo


def _day_volatility(vol: str, base_vol: float, vol_of_vol: float, eps: np.ndarray, rng: np.random.Generator,
                    short: np.ndarray, unit_gap: np.ndarray, unit_move: np.ndarray) -> np.ndarray:
    """Each day's volatility under the ``vol`` model (:data:`NULL_VOLS`), before the short-session scaling."""
    nd = len(eps)
    if vol == "sv":
        x = np.empty(nd)
        x[0] = 0.0
        for i in range(1, nd):
            x[i] = 0.97 * x[i - 1] + np.sqrt(1 - 0.97 ** 2) * eps[i]
        sig_day = base_vol * np.exp(vol_of_vol * (0.8 * x + 0.6 * rng.standard_normal(nd)))
    elif vol == "constant":
        sig_day = np.full(nd, base_vol)
    elif vol == "lognormal":
        sig_day = base_vol * np.exp(vol_of_vol * eps - 0.5 * vol_of_vol ** 2)
    else:   # garch: today's variance from yesterday's whole move (gap and session)
        a, b = GARCH_AB
        sig_day, h = np.empty(nd), base_vol ** 2
        for i in range(nd):
            sig_day[i] = np.sqrt(h)
            move = sig_day[i] * short[i] * (unit_gap[i] + unit_move[i]) / np.sqrt(1.0 + 0.3 ** 2)
            h = (1.0 - a - b) * base_vol ** 2 + a * move ** 2 + b * h
    return sig_day


def _null_frames(sched: pd.DataFrame, opens: np.ndarray, nbars: np.ndarray, interval: int, calendar: str,
                 log_open: np.ndarray, rel: list, wick_hi: list, wick_lo: list, vol: str,
                 seed: int) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """``(daily, bars)`` of the null world's scaled paths, each session opening at ``log_open``."""
    nd = len(nbars)
    idx_parts, val_parts, daily_rows = [], [], np.empty((nd, 5))
    for i in range(nd):
        n = int(nbars[i])
        pts = log_open[i] + rel[i]
        o, c = np.exp(pts[:-1]), np.exp(pts[1:])
        h, lw = np.exp(log_open[i] + wick_hi[i]), np.exp(log_open[i] + wick_lo[i])
        idx_parts.append(opens[i] + np.arange(n) * np.timedelta64(interval, "m"))
        val_parts.append(np.stack([o, h, lw, c, np.full(n, 1e6)], axis=1))
        daily_rows[i] = (o[0], h.max(), lw.min(), c[-1], 1e6 * n)
    index = pd.DatetimeIndex(np.concatenate(idx_parts)).tz_localize("UTC").tz_convert(timezone_of(calendar))
    index.name = "datetime"
    bars = pd.DataFrame(np.concatenate(val_parts), index=index, columns=["open", "high", "low", "close", "volume"])
    bars.attrs.update(symbol="NULL", calendar=calendar, interval=interval, synthetic_intraday=True,
                      source=f"null world (Brownian, {vol} volatility, seed {seed})")
    didx = pd.DatetimeIndex(sched.index).tz_localize(None)
    didx.name = "date"
    daily = pd.DataFrame(daily_rows, index=didx, columns=["open", "high", "low", "close", "volume"])
    daily.attrs.update(symbol="NULL", source=f"null world (Brownian, {vol} volatility, seed {seed})", synthetic_intraday=False)
    return daily, bars


__all__ = ["NULL_VOLS", "DEFAULT_KS", "DayMatrix", "day_matrix", "same_sign_share", "momentum_sharpe", "bar_returns",
           "lag1_autocorr", "high_bar_index", "ks_statistic", "ks_critical", "artefact_figures",
           "bridge_extremes", "null_world"]
