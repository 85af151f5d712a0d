"""The project's annualisation: sessions per year of the data's calendar and the one Sharpe convention.

Ground floor (numpy, pandas and :mod:`mltrade.calendars` only), so that feeds, analyzers and models
annualise as the reports do without importing the statistics of :mod:`mltrade.significance`, which
keeps these names as its face (``mltrade.significance.sharpe`` is this :func:`sharpe`).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import pandas as pd

#: annualisation factor when the data's calendar is unknown and it spans less than a year
DEFAULT_PERIODS = 252

__all__ = ["DEFAULT_PERIODS", "sessions_per_year", "sharpe", "total_return"]


def sharpe(returns: Sequence[float] | np.ndarray, periods: float = DEFAULT_PERIODS) -> float:
    """Annualised Sharpe ratio of per-session returns (ddof 1, ×√periods); 0.0 without variation.

    The one Sharpe convention of the project: every Sharpe (reports, sweeps, NCP, DQN) is this one."""
    r = np.asarray(returns, dtype=float)
    if len(r) < 2:
        return 0.0
    sd = r.std(ddof=1)
    return float(r.mean() / sd * math.sqrt(periods)) if sd > 0 else 0.0


def total_return(returns: Sequence[float] | np.ndarray) -> float:
    """Compounded return ∏(1 + r) − 1."""
    r = np.asarray(returns, dtype=float)
    return float(np.prod(1.0 + r) - 1.0)


def sessions_per_year(dates: Sequence | pd.DatetimeIndex, calendar: Optional[str] = None) -> float:
    """The annualisation factor: sessions per year of the data's calendar.

    With an exchange ``calendar`` (``"XNAS"``, ``"XETR"``): its sessions over the whole calendar
    years the dates touch, per year. Without one: the distinct session dates per year of the span
    when the dates cover at least a year, else :data:`DEFAULT_PERIODS` (252).
    """
    idx = pd.DatetimeIndex(pd.to_datetime(list(dates) if not isinstance(dates, pd.DatetimeIndex) else dates))
    if len(idx) == 0:
        return float(DEFAULT_PERIODS)
    if idx.tz is not None:
        idx = idx.tz_localize(None)
    days = idx.normalize().unique()
    first, last = days.min(), days.max()
    if calendar:
        from mltrade.calendars import sessions

        y0, y1 = first.year, last.year
        n = len(sessions(calendar, f"{y0}-01-01", f"{y1}-12-31"))
        return float(n / (y1 - y0 + 1))
    span = (last - first).days + 1
    if span >= 365:
        return float(len(days) / (span / 365.25))
    return float(DEFAULT_PERIODS)
