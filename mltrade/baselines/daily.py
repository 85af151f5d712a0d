"""The baselines of a daily learner on its own sessions, in the session simulation (no backtrader).

Buy-and-hold of the index, an always-long certificate and a random direction (seeded, many draws)
on the same sessions, certificates and costs as :mod:`mltrade.baselines.simulation` trades: the
training and holdout tables of the DQN pipeline.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import pandas as pd

from mltrade.annualise import DEFAULT_PERIODS, sharpe
from mltrade.baselines.simulation import TradeCosts, daily_ohlc, decisions_result

__all__ = ["buy_and_hold", "always_long", "random_direction", "baseline_table"]


def buy_and_hold(daily: pd.DataFrame, costs: Optional[TradeCosts] = None,
                 periods_per_year: float = DEFAULT_PERIODS) -> Dict[str, float]:
    """The index held from the first open to the last close (no leverage, no costs).

    Its Sharpe is the project's (:func:`mltrade.annualise.sharpe`) of one return per session (the
    first from the open, then close to close), annualised by ``periods_per_year``: the sessions per
    year of the data's calendar (:func:`mltrade.annualise.sessions_per_year`), by default 252 as
    :func:`~mltrade.baselines.simulation.summarize` assumes. NaN when the returns do not vary."""
    o, h, lo, c = daily_ohlc(daily)
    if len(o) == 0:
        return {"total_return": 0.0, "sessions": 0}
    eq = np.concatenate([[o[0]], c])
    peak = np.maximum.accumulate(eq)
    r = np.diff(eq) / eq[:-1]
    sd = r.std(ddof=1) if len(r) > 1 else 0.0
    return {"total_return": float(c[-1] / o[0] - 1.0), "trades": 1,
            "sharpe": sharpe(r, periods_per_year) if sd > 0 else float("nan"),
            "max_drawdown": float((eq / peak - 1.0).min()), "sessions": int(len(o))}


def always_long(daily: pd.DataFrame, distance: float, costs: TradeCosts,
                session: str = "day") -> Dict[str, float]:
    """A long certificate ``distance`` from the entry every session."""
    n = len(daily)
    return decisions_result(daily, np.ones(n), np.full(n, distance), costs, session)[0]


def random_direction(daily: pd.DataFrame, distance: float, costs: TradeCosts, n_draws: int = 50,
                     seed: int = 0, session: str = "day") -> Dict[str, float]:
    """Random long/short each session: mean, median and 5/95% quantiles of the total return over draws."""
    rng = np.random.default_rng(seed)
    n = len(daily)
    totals = []
    for _ in range(n_draws):
        d = rng.choice([-1.0, 1.0], size=n)
        totals.append(decisions_result(daily, d, np.full(n, distance), costs, session)[0]["total_return"])
    t = np.asarray(totals)
    return {"total_return": float(t.mean()), "median": float(np.median(t)),
            "q05": float(np.quantile(t, 0.05)),
            "q95": float(np.quantile(t, 0.95)), "draws": int(n_draws), "sessions": int(n)}


def baseline_table(daily: pd.DataFrame, distance: float, costs: TradeCosts, n_draws: int = 50,
                   seed: int = 0, session: str = "day") -> Dict[str, Dict[str, float]]:
    """All three baselines on the same sessions, keyed by name."""
    return {"buy_and_hold": buy_and_hold(daily),
            "always_long": always_long(daily, distance, costs, session),
            "random_direction": random_direction(daily, distance, costs, n_draws, seed, session)}
