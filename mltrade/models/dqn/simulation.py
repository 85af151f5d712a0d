"""How the DQN pipeline prices a row of decisions: the session simulation of each mode (day / night through
:func:`mltrade.models.baselines.decisions_result`, intraday through :class:`IntradaySim`), the baselines of a
range, the ensemble's barrier per session and the index's session returns."""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import pandas as pd

from mltrade.models.baselines import (REASONS, TradeCosts, baseline_table, buy_and_hold, decisions_result,
                                      simulate_budget, summarize, trade_outcomes)


class IntradaySim:
    """Session simulation of ``[dqn] mode = "intraday"``: decide after ``n_candles`` bars, buy at the open of
    the next bar, exit at the session close, the stop or the knock-out (as :class:`KnockoutEnv` intraday)."""

    def __init__(self, intraday: pd.DataFrame, n_candles: int) -> None:
        from mltrade.models.dqn.observations import daily_from_intraday

        if n_candles < 1:
            raise ValueError(f"dqn.n_candles: expected >= 1, got {n_candles}")
        self.intraday = intraday
        self.n_candles = int(n_candles)
        dates = intraday.index.normalize()
        if getattr(dates, "tz", None) is not None:
            dates = dates.tz_localize(None)
        self.paths: Dict[pd.Timestamp, tuple] = {}
        for day, g in intraday.groupby(dates, sort=True):
            if len(g) > self.n_candles:
                path = g.iloc[self.n_candles:]
                self.paths[pd.Timestamp(day)] = tuple(path[k].to_numpy(float)
                                                      for k in ("open", "high", "low", "close"))
        if not self.paths:
            raise ValueError(f"intraday bars: no session has more than n_candles={n_candles} bars")
        daily = daily_from_intraday(intraday)
        self.daily = daily.loc[daily.index.isin(list(self.paths))]

    def result(self, daily: pd.DataFrame, direction: np.ndarray, distance: np.ndarray,
               costs: TradeCosts) -> tuple:
        """Like :func:`decisions_result` for sessions of ``daily`` traded after the first candles."""
        d, dist = np.asarray(direction, float), np.asarray(distance, float)
        entry, exit_ = np.zeros(len(d)), np.zeros(len(d))
        reason = np.zeros(len(d), dtype=np.int8)
        for t, day in enumerate(daily.index):
            if d[t] == 0 or day not in self.paths:
                continue
            o, h, lo, c = self.paths[day]
            e, x, r = trade_outcomes(d[t:t + 1], dist[t:t + 1], o[0], o, h, lo, c, costs)
            entry[t], exit_[t], reason[t] = e[0], x[0], r[0]
        sim = simulate_budget(entry, exit_, costs)
        sim.index = daily.index
        sim["direction"], sim["distance"], sim["entry"], sim["exit"] = d, dist, entry, exit_
        sim["exit_reason"] = [REASONS[int(x)] for x in reason]
        return summarize(sim, costs), sim


def session_result(daily: pd.DataFrame, direction: np.ndarray, distance: np.ndarray, costs: TradeCosts,
                   session: str, sim: Optional[IntradaySim] = None) -> tuple:
    """``(summary, per-session frame)`` of trading ``direction``/``distance`` on ``daily`` as ``session`` does."""
    if session == "intraday":
        if sim is None:
            raise ValueError("session 'intraday' needs the intraday bars (IntradaySim)")
        return sim.result(daily, direction, distance, costs)
    return decisions_result(daily, direction, distance, costs, session)


def session_baselines(daily: pd.DataFrame, distance: float, costs: TradeCosts, draws: int, seed: int,
                      session: str, sim: Optional[IntradaySim] = None) -> dict:
    """Buy-and-hold, always-long and random-direction baselines of ``daily`` at barrier ``distance``."""
    if session != "intraday":
        return baseline_table(daily, distance, costs, draws, seed, session)
    n = len(daily)
    rng = np.random.default_rng(seed)
    totals = [session_result(daily, rng.choice([-1, 1], n), np.full(n, distance), costs, session,
                             sim)[0]["total_return"] for _ in range(draws)]
    t = np.asarray(totals)
    return {"buy_and_hold": buy_and_hold(daily, costs),
            "always_long": session_result(daily, np.ones(n), np.full(n, distance), costs, session, sim)[0],
            "random_direction": {"total_return": float(t.mean()), "median": float(np.median(t)),
                                 "q05": float(np.quantile(t, 0.05)), "q95": float(np.quantile(t, 0.95)),
                                 "draws": int(draws), "sessions": int(n)}}


def intraday_observations_for(daily_obs: pd.DataFrame, sim: IntradaySim) -> pd.DataFrame:
    """Daily observations (known before the session) plus the session's first ``n_candles`` candles."""
    from mltrade.models.dqn.observations import intraday_observations

    first = intraday_observations(sim.intraday, sim.n_candles).reindex(sim.daily.index)
    return pd.concat([daily_obs.reindex(sim.daily.index), first], axis=1)


def session_score(daily: pd.DataFrame, direction: np.ndarray, distance: np.ndarray, costs: TradeCosts,
                  session: str, sim: Optional[IntradaySim] = None) -> float:
    """The total return of :func:`session_result`."""
    return session_result(daily, direction, distance, costs, session, sim)[0]["total_return"]


def session_barriers(decisions: pd.DataFrame, fallback: float = 0.08) -> np.ndarray:
    """The ensemble's barrier distance of every session of ``decisions`` (from
    :func:`mltrade.models.dqn.inference.decide`): its ``session_distance`` (the vote's distance where it
    trades, else the median of the agents' trading actions), sessions without one take the median over the
    range (``fallback`` when there is none). The baselines and the learner ladder trade these barriers, so
    they differ from the ensemble only in the direction."""
    col = decisions["session_distance"] if "session_distance" in decisions else \
        decisions["distance"].where(decisions["direction"] != 0)
    b = col.to_numpy(float).copy()
    if "valid" in decisions:
        b[~decisions["valid"].to_numpy(bool)] = np.nan
    finite = np.isfinite(b) & (b > 0)
    fill = float(np.median(b[finite])) if finite.any() else float(fallback)
    return np.where(finite, b, fill)


def index_session_returns(daily: pd.DataFrame) -> np.ndarray:
    """Per-session returns of holding the index over ``daily``: first open -> close, then close -> close."""
    c = daily["close"].to_numpy(float)
    if not len(c):
        return np.zeros(0)
    return np.concatenate([[c[0] / float(daily["open"].iloc[0]) - 1.0], c[1:] / c[:-1] - 1.0])
