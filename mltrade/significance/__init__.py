"""Could this figure be luck? Bootstrap intervals, Hansen's SPA, StepM and the Deflated Sharpe Ratio.

Every function takes **per-session (daily) returns** as simple returns (0.01 = +1 %). Conventions
match the report: Sharpe = mean / std (ddof 1) · √periods, ``periods`` the data calendar's sessions
per year (:func:`sessions_per_year`); total return = ∏(1 + r) − 1.

* :func:`bootstrap_ci` — a studentized circular-block-bootstrap interval (Ledoit & Wolf 2008) for the
  Sharpe ratio or the total return; :func:`sharpe_diff_test` the same for the Sharpe difference
  of a strategy and a baseline (interval and p-value). They hold their level under dependence and
  fat tails in a year of sessions (``benchmarks/bench_significance.py``).
* :func:`spa_test` / :func:`spa_pvalue` / :func:`spa_best_pvalue` — Hansen's (2005) studentized
  Superior Predictive Ability test, consistent p-value, on ``arch``'s stationary-bootstrap indices:
  H0 "no model beats the benchmark". A small p says the strategy (the best of several) beats the
  benchmark beyond what luck explains; p = 1 when none beats it on average.
* :func:`stepm` — Romano & Wolf's (2005) stepwise test: *which* models beat the benchmark.
* :func:`deflated_sharpe` — Bailey & López de Prado (2014): the probability that the chosen trial's
  true Sharpe exceeds the best Sharpe expected from ``n_trials`` unskilled trials.
* :func:`significance` — the report's block: intervals, SPA p and Sharpe difference per baseline
  and a sentence.

Too few sessions (fewer than :data:`MIN_SESSIONS`) or no variation give ``None`` (JSON ``null``),
never a made-up number. The Probability of Backtest Overfitting of a search is :mod:`mltrade.pbo`.

The intervals are :mod:`mltrade.significance.intervals`, the tests of a best among several
:mod:`mltrade.significance.selection`, the Sharpe convention and annualisation :mod:`mltrade.annualise`.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd

# the face: every name below stays importable as mltrade.significance.NAME
from mltrade.annualise import DEFAULT_PERIODS, sessions_per_year, sharpe, total_return  # noqa: F401
from mltrade.significance.intervals import (CI_BLOCK_FLOOR, MIN_SESSIONS, _arr, block_length,  # noqa: F401
                                            block_lengths, bootstrap_ci, bootstrap_t, sharpe_ci_many,
                                            sharpe_diff_test, total_return_ci_many)
from mltrade.significance.selection import (EULER_GAMMA, bootstrap_means, deflated_sharpe,  # noqa: F401
                                            hansen_omega, spa_best_pvalue, spa_core, spa_pvalue,
                                            spa_pvalues_many, spa_test, stationary_indices, stepm)

__all__ = ["sharpe", "total_return", "sessions_per_year", "block_length", "block_lengths", "bootstrap_ci",
           "sharpe_ci_many", "total_return_ci_many", "sharpe_diff_test", "bootstrap_t", "stationary_indices",
           "bootstrap_means", "hansen_omega", "spa_core", "spa_pvalues_many", "spa_test", "stepm",
           "spa_pvalue", "spa_best_pvalue",
           "deflated_sharpe", "significance", "MIN_SESSIONS"]


def _fmt_p(p: Optional[float]) -> str:
    return "n/a" if p is None else (f"{p:.3f}" if p >= 0.001 else "<0.001")


def significance(strategy_returns: Sequence[float] | np.ndarray | pd.Series,
                 baselines: Mapping[str, Sequence[float] | np.ndarray | pd.Series],
                 reps: int = 2000, seed: int = 0, level: float = 0.95, alpha: float = 0.05,
                 labels: Optional[Mapping[str, str]] = None, periods: float = DEFAULT_PERIODS) -> dict:
    """The report's significance block for one strategy against its baselines (same sessions).

    Returns ``{"sharpe_ci", "return_ci", "spa_pvalue": {baseline: p}, "spa_pvalue_baseline_better":
    {baseline: p}, "sharpe_diff": {baseline: {"difference", "ci", "pvalue", "block"}}, "periods",
    "n_sessions", "level", "alpha", "method", "words"}``; intervals and p-values are
    ``None`` when there are too few sessions. ``labels`` names the baselines in ``words``
    (``{"buy_and_hold": "buy-and-hold"}``). A strategy the baseline beats (the reverse SPA test) is
    said to be worse than it, never "not distinguishable".
    """
    labels = dict(labels or {})
    s = strategy_returns
    r = _arr(s)
    out: dict = {
        "n_sessions": int(len(r)), "level": level, "alpha": alpha, "periods": float(periods),
        "method": (f"studentized circular block bootstrap (Ledoit & Wolf 2008; {reps} resamples, block length "
                   f"the larger of Politis-White's and {CI_BLOCK_FLOOR}·n^(1/3)) for the intervals and the "
                   f"Sharpe difference to each baseline; Hansen's studentized SPA (consistent p-value, "
                   f"stationary bootstrap) against each baseline"),
        "sharpe_ci": None, "return_ci": None, "spa_pvalue": {}, "spa_pvalue_baseline_better": {},
        "sharpe_diff": {},
    }
    ci = bootstrap_ci(r, "sharpe", level, reps, seed, periods)
    out["sharpe_ci"] = list(ci) if ci else None
    ci = bootstrap_ci(r, "total_return", level, reps, seed)
    out["return_ci"] = list(ci) if ci else None
    words = []
    pct = f"{alpha:.0%}"
    for name, b in baselines.items():
        p = spa_pvalue(s, b, reps, seed)
        out["spa_pvalue"][name] = p
        q = spa_pvalue(b, s, reps, seed) if p is not None and p >= alpha else None
        out["spa_pvalue_baseline_better"][name] = q
        out["sharpe_diff"][name] = sharpe_diff_test(s, b, level, reps, seed, periods)
        label = labels.get(name, name)
        if p is None:
            words.append(f"too few sessions ({len(r)}) to compare with {label}")
        elif p < alpha:
            words.append(f"beats {label} at {pct} (SPA p={_fmt_p(p)})")
        elif q is not None and q < alpha:
            words.append(f"worse than {label} at {pct} (SPA p={_fmt_p(q)} that {label} beats it)")
        else:
            words.append(f"not distinguishable from {label} at {pct} (SPA p={_fmt_p(p)})")
    head = (f"Sharpe {level:.0%} interval [{out['sharpe_ci'][0]:.2f}, {out['sharpe_ci'][1]:.2f}]"
            if out["sharpe_ci"] else f"too few sessions ({len(r)}) for an interval")
    out["words"] = head + ("; " + "; ".join(words) if words else "") + "."
    return out
