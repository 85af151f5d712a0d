"""The learner ladder of a DQN session ensemble (:mod:`mltrade.models.ladder` on the DQN's own terms).

Same inputs: the ensemble's observation values of each session (known at the previous close). Same
folds: the fold's training range fits the learners, its validation range chooses (hyper-parameters and
the best simple learner), its test range (the holdout) is scored once; the learners are refitted on
training + validation for the holdout (the ladder's rule). Same objective: the session's return of the
DQN's certificate trade with the whole budget (``[dqn] budget``, whole certificates, fees, stop,
knock-out: :mod:`mltrade.models.baselines`, priced by :mod:`mltrade.products`) on the ensemble's own
barrier of that session (:func:`mltrade.models.dqn.simulation.session_barriers`), so a rung differs from
the ensemble only in the direction it takes. The ensemble's rung is its gated decisions, scored the same
way (no trade = 0). Each session is priced at the start budget (sessions independent, as the ladder
needs), so the ladder's figures are log-products of per-session returns, not the compounded budget.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import pandas as pd

from mltrade.models.baselines import TradeCosts, step_budget


def fixed_budget_returns(result: Callable[..., tuple], daily: pd.DataFrame, positions: np.ndarray,
                         distances: np.ndarray, costs: TradeCosts) -> np.ndarray:
    """Per-session return of trading ``positions`` (+1/0/-1) at ``distances`` on ``daily`` with the whole
    start budget each session: ``result(daily, direction, distance, costs)`` gives each session's entry and
    exit (the training-time simulation), :func:`step_budget` the whole-certificate arithmetic."""
    _, sim = result(daily, np.asarray(positions, float), np.asarray(distances, float), costs)
    b = float(costs.budget)
    return np.array([step_budget(b, e, x, costs)[0] / b - 1.0
                     for e, x in zip(sim["entry"].to_numpy(float), sim["exit"].to_numpy(float))])


def session_ladder(obs: pd.DataFrame, daily: pd.DataFrame, fold: Any, barrier: np.ndarray,
                   val_decisions: pd.DataFrame, test_decisions: pd.DataFrame, costs: TradeCosts,
                   result: Callable[..., tuple], seed: int = 0, name: str = "ensemble",
                   spa_reps: int = 2000) -> dict:
    """The ladder of one fold and session as :meth:`mltrade.models.ladder.Ladder.to_dict`.

    ``obs``/``daily``: every session of the data (rows as ``fold``); ``barrier``: the ensemble's barrier
    distance of each session from the fold's first training session to its last test session;
    ``val_decisions``/``test_decisions``: the ensemble's gated decisions (:func:`decide`) on validation and
    test; ``result``: the session simulation (``(daily, direction, distance, costs) -> (summary, frame)``).
    """
    from mltrade.models.ladder import Ladder, LadderSplit

    lo, hi = fold.train_start, fold.test_stop
    span = daily.iloc[lo:hi]
    x = obs.iloc[lo:hi].to_numpy(float)
    barrier = np.asarray(barrier, float)
    if barrier.shape != (hi - lo,):
        raise ValueError(f"session_ladder: expected {hi - lo} barriers (training .. test), got {barrier.shape}")

    def returns_fn(positions: np.ndarray, rows: np.ndarray) -> np.ndarray:
        full = np.zeros(hi - lo)
        full[rows] = positions
        return fixed_budget_returns(result, span, full, barrier, costs)[rows]

    fit = np.arange(fold.train_stop - lo)
    fit = fit[np.isfinite(x[fit]).all(1)]
    split = LadderSplit.simple(fit, np.arange(fold.val_start - lo, fold.val_stop - lo),
                               np.arange(fold.test_start - lo, fold.test_stop - lo))
    lad = Ladder(x, split, returns_fn, seed=seed, spa_reps=spa_reps)

    def model_returns(dec: pd.DataFrame, rows: np.ndarray) -> tuple:
        full_p = np.zeros(hi - lo)
        full_p[rows] = dec["trade_direction"].to_numpy(float)
        full_d = barrier.copy()
        traded = full_p[rows] != 0
        full_d[rows[traded]] = dec["distance"].to_numpy(float)[traded]
        return fixed_budget_returns(result, span, full_p, full_d, costs)[rows], full_p[rows]

    vr, vp = model_returns(val_decisions, split.validation)
    hr, hp = model_returns(test_decisions, split.holdout)
    lad.add_model(name, vr, hr, vp, hp)
    out = lad.to_dict()
    out["returns"] = ("per-session return of the DQN's certificate trade with the whole start budget "
                      f"({costs.budget:g}) on the ensemble's barrier of the session")
    return out


def ladder_lines(session: str, ladder: Optional[dict]) -> list:
    """The CLI's lines for one session's ladder: the table and the verdict."""
    from mltrade.models.ladder import format_ladder

    if not ladder:
        return []
    return (f"{session} ensemble: " + format_ladder(ladder)).splitlines()
