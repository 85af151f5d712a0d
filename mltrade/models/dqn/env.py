"""Gymnasium environment: one knock-out trade per session, priced with :mod:`mltrade.products`.

Modes
* ``day``: the original: buy at the session open, sell at the close, at the stop
  (``stop * entry``) or lose everything at the knock-out.
* ``night``: buy at the close, sell at the next open (overnight gap; only the
  open is known, so stop and knock-out are checked as a gap at the open).
* ``intraday``: decide after ``n_candles`` bars of the session, buy at the open
  of the next bar, exit at the session close, the stop or the knock-out.

Actions (default 19): ``0..8`` long with barriers at ``long_barriers * entry``,
``9`` no trade, ``10..18`` short at ``short_barriers * entry``. Reward: percent
change of the budget. The episode *terminates* only where the reward ends: when
the budget falls below ``floor`` (no further trade is possible). Reaching
``episode_length`` sessions or the end of the data *truncates* it (a time limit:
the market and the reward go on, so the agent bootstraps from the next state). Outcomes of every action in every session are precomputed once
(vectorised), so a step is a table look-up plus the whole-certificate budget
arithmetic of :func:`mltrade.models.baselines.step_budget`.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import gymnasium as gym
import numpy as np
import pandas as pd

from mltrade.models.baselines import REASONS, TradeCosts, session_outcome_table, step_budget, trade_outcomes
from mltrade.models.dqn.observations import intraday_observations

LONG_BARRIERS = (0.88, 0.89, 0.90, 0.91, 0.92, 0.93, 0.94, 0.95, 0.96)
SHORT_BARRIERS = (1.04, 1.05, 1.06, 1.07, 1.08, 1.09, 1.10, 1.11, 1.12)
MODES = ("day", "night", "intraday")


def action_table(long_barriers: Sequence[float] = LONG_BARRIERS,
                 short_barriers: Sequence[float] = SHORT_BARRIERS) -> tuple[np.ndarray, np.ndarray]:
    """Direction (+1/0/-1) and barrier distance of every action: longs, no trade, shorts."""
    for b in long_barriers:
        if not 0 < b < 1:
            raise ValueError(f"long_barriers: each must lie in (0, 1) (fraction of the entry), got {b!r}")
    for b in short_barriers:
        if not b > 1:
            raise ValueError(f"short_barriers: each must be > 1 (fraction of the entry), got {b!r}")
    d = np.concatenate([np.ones(len(long_barriers)), [0.0], -np.ones(len(short_barriers))])
    dist = np.concatenate([1.0 - np.asarray(long_barriers, float), [0.0],
                           np.asarray(short_barriers, float) - 1.0])
    return d, dist


def intraday_outcome_table(intraday: pd.DataFrame, n_candles: int, directions: np.ndarray,
                           distances: np.ndarray, costs: TradeCosts) -> tuple:
    """Per-session entry/exit/reason ``(T, A)`` for entries at the open of bar ``n_candles``."""
    dates = intraday.index.normalize()
    if getattr(dates, "tz", None) is not None:
        dates = dates.tz_localize(None)
    keys, E, X, R = [], [], [], []
    for day, g in intraday.groupby(dates, sort=True):
        if len(g) <= n_candles:
            continue
        path = g.iloc[n_candles:]
        o, h, lo, c = (path[k].to_numpy(float) for k in ("open", "high", "low", "close"))
        e, x, r = trade_outcomes(directions, distances, o[0], o, h, lo, c, costs)
        keys.append(day)
        E.append(e), X.append(x), R.append(r)
    return pd.DatetimeIndex(keys), np.array(E), np.array(X), np.array(R)


class KnockoutEnv(gym.Env):
    """One step per session; observation rows must be known before the decision (caller's duty)."""

    metadata = {"render_modes": []}

    def __init__(self, observations: pd.DataFrame, daily: Optional[pd.DataFrame] = None,
                 mode: str = "day", costs: Optional[TradeCosts] = None,
                 long_barriers: Sequence[float] = LONG_BARRIERS,
                 short_barriers: Sequence[float] = SHORT_BARRIERS,
                 intraday: Optional[pd.DataFrame] = None, n_candles: int = 17,
                 start: Any = None, end: Any = None, random_start: bool = False,
                 episode_length: Optional[int] = None, reward_scale: float = 100.0) -> None:
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        self.mode = mode
        self.costs = costs or TradeCosts()
        self.directions, self.distances = action_table(long_barriers, short_barriers)
        self.no_trade_action = int(len(long_barriers))
        if mode == "intraday":
            if intraday is None:
                raise ValueError("mode 'intraday' needs the intraday bars (intraday=...)")
            keys, E, X, R = intraday_outcome_table(intraday, n_candles, self.directions, self.distances,
                                                   self.costs)
            outcome_index = keys
            first = intraday_observations(intraday, n_candles).reindex(keys)
            first = first.drop(columns=[c for c in first.columns if c in observations.columns])  # given already
            observations = pd.concat([observations.reindex(keys), first], axis=1)
        else:
            if daily is None:
                raise ValueError(f"mode {mode!r} needs the daily bars (daily=...)")
            E, X, R = session_outcome_table(daily, self.directions, self.distances, self.costs,
                                            session=mode)
            outcome_index = daily.index
            observations = observations.reindex(daily.index)
        obs = observations.to_numpy(np.float32)
        valid = np.isfinite(obs).all(axis=1)
        if mode == "night":
            valid[0] = False
        sel = pd.Series(valid, index=outcome_index)
        if start is not None:
            sel &= outcome_index >= pd.Timestamp(start)
        if end is not None:
            sel &= outcome_index <= pd.Timestamp(end)
        rows = np.flatnonzero(sel.to_numpy())
        if len(rows) < 2:
            raise ValueError(f"KnockoutEnv: only {len(rows)} session(s) with complete observations "
                             f"between {start} and {end}; need at least 2")
        self.index = outcome_index[rows]
        self.obs = obs[rows]
        self.entry, self.exit, self.reason = E[rows], X[rows], R[rows]
        self.columns = list(observations.columns)
        self.random_start = bool(random_start)
        self.episode_length = episode_length
        self.reward_scale = float(reward_scale)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (self.obs.shape[1],), np.float32)
        self.action_space = gym.spaces.Discrete(len(self.directions))
        self.t = 0
        self.t_end = len(self.obs)
        self.budget = self.costs.budget

    @property
    def nb_actions(self) -> int:
        """Number of discrete actions."""
        return int(self.action_space.n)

    def reset(self, seed: Optional[int] = None, options: Optional[dict] = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        n = len(self.obs)
        length = self.episode_length or n
        self.t = int(self.np_random.integers(0, max(1, n - length + 1))) if self.random_start else 0
        self.t_end = min(n, self.t + length)
        self.budget = self.costs.budget
        return self.obs[self.t].copy(), {"date": str(self.index[self.t].date()), "budget": self.budget}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = int(action)
        if not 0 <= a < self.nb_actions:
            raise ValueError(f"action: expected 0..{self.nb_actions - 1}, got {action!r}")
        if self.t >= self.t_end or self.budget < self.costs.floor:
            raise RuntimeError("KnockoutEnv.step: the episode is over (terminated or truncated); "
                               "call reset()")
        before = self.budget
        after, n = step_budget(before, float(self.entry[self.t, a]), float(self.exit[self.t, a]), self.costs)
        self.budget = after
        info = {"date": str(self.index[self.t].date()), "size": n, "budget": after,
                "exit_reason": REASONS[int(self.reason[self.t, a])] if n else "none"}
        reward = (after / before - 1.0) * self.reward_scale
        self.t += 1
        # terminal only where the reward stream really ends (the budget is below the floor: no more trades);
        # the end of the episode window or of the data is a time limit (truncated: the agent bootstraps there)
        terminated = bool(after < self.costs.floor)
        truncated = bool(not terminated and self.t >= self.t_end)
        obs = self.obs[min(self.t, len(self.obs) - 1)].copy()
        return obs, float(reward), terminated, truncated, info

    def session_returns(self) -> np.ndarray:
        """Certificate return ``exit/entry - 1`` of every (session, action); 0 for no trade."""
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(self.entry > 0, self.exit / np.where(self.entry > 0, self.entry, 1.0) - 1.0, 0.0)
        return r
