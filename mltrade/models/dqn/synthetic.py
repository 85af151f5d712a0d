"""Synthetic daily bars for the DQN's learning tests: a null world, or one with a planted pattern.

Both cut daily OHLC from a simulated Brownian motion: per session an overnight
gap, then ``steps`` increments whose volatility varies from day to day
(log-normal around ``vol``); open = first price, high/low = the path's extremes,
close = the last price. ``brownian_daily`` has no pattern at all (nothing to
learn: every edge found there is luck). ``planted_daily`` adds one drift per
session whose sign repeats the previous session's open -> close sign with
probability ``persist``: the last session's body (known at the decision, it is
``vs_close_close - vs_close_open`` of the observations) predicts the next one.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd


def _daily_bars(n: int, seed: int, start: str, steps: int, vol: float, vol_of_vol: float, gap_vol: float,
                price: float, drift_sign: Optional[np.ndarray], drift: float) -> pd.DataFrame:
    if n < 3:
        raise ValueError(f"n: expected at least 3 sessions, got {n!r}")
    if steps < 2:
        raise ValueError(f"steps: expected at least 2 increments per session, got {steps!r}")
    rng = np.random.default_rng(seed)
    sigma = vol * np.exp(vol_of_vol * rng.standard_normal(n) - 0.5 * vol_of_vol ** 2)   # per-day volatility
    rows = np.empty((n, 4))
    level = float(price)
    prev_body = 1.0
    for t in range(n):
        o = level * np.exp(gap_vol * rng.standard_normal())
        mu = 0.0
        if drift_sign is not None:
            s = np.sign(prev_body) if drift_sign[t] else -np.sign(prev_body)
            mu = s * drift * sigma[t] / steps                  # the day's drift: `drift` standard deviations
        inc = mu + sigma[t] / np.sqrt(steps) * rng.standard_normal(steps)
        path = o * np.exp(np.concatenate([[0.0], np.cumsum(inc)]))
        rows[t] = (o, path.max(), path.min(), path[-1])
        prev_body = path[-1] - o if path[-1] != o else 1.0
        level = path[-1]
    return pd.DataFrame(rows, columns=["open", "high", "low", "close"],
                        index=pd.DatetimeIndex(pd.bdate_range(start, periods=n), name="date"))


def brownian_daily(n: int, seed: int = 0, start: str = "2001-01-01", steps: int = 78, vol: float = 0.012,
                   vol_of_vol: float = 0.3, gap_vol: float = 0.003, price: float = 5000.0) -> pd.DataFrame:
    """Null world: ``n`` business-day sessions of OHLC cut from a driftless Brownian motion."""
    return _daily_bars(n, seed, start, steps, vol, vol_of_vol, gap_vol, price, None, 0.0)


def planted_daily(n: int, seed: int = 0, persist: float = 0.85, drift: float = 1.0, start: str = "2001-01-01",
                  steps: int = 78, vol: float = 0.012, vol_of_vol: float = 0.3, gap_vol: float = 0.002,
                  price: float = 5000.0) -> pd.DataFrame:
    """Planted world: each session drifts ``drift`` day-standard-deviations in the direction of the previous
    session's body with probability ``persist`` (else against it)."""
    if not 0.0 <= persist <= 1.0:
        raise ValueError(f"persist: expected a probability in [0, 1], got {persist!r}")
    sign = np.random.default_rng(seed + 1_000_003).random(n) < persist
    return _daily_bars(n, seed, start, steps, vol, vol_of_vol, gap_vol, price, sign, drift)
