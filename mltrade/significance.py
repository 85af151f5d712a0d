"""Could this figure be luck? Bootstrap intervals, Hansen's SPA and the Deflated Sharpe Ratio.

Every function takes **per-session (daily) returns** as simple returns (0.01 = +1 %). Conventions
match the report: Sharpe = mean / std (ddof 1) · √periods; total return = ∏(1 + r) − 1.

* :func:`bootstrap_ci` — a stationary-bootstrap interval (Politis–Romano, ``arch.bootstrap``) for the
  Sharpe ratio or the total return; the mean block length is Politis–White's optimal one.
* :func:`spa_pvalue` / :func:`spa_best_pvalue` — Hansen's (2005) Superior Predictive Ability test,
  consistent p-value, on losses = −returns: H0 "no model beats the benchmark". A small p says the
  strategy (the best of several) beats the benchmark beyond what luck explains.
* :func:`deflated_sharpe` — Bailey & López de Prado (2014): the probability that the chosen trial's
  true Sharpe exceeds the best Sharpe expected from ``n_trials`` unskilled trials.
* :func:`significance` — the report's block: intervals, SPA p per baseline and a sentence.

Too few sessions (fewer than :data:`MIN_SESSIONS`) or no variation give ``None`` (JSON ``null``),
never a made-up number.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats

MIN_SESSIONS = 10
EULER_GAMMA = 0.5772156649015329

__all__ = ["sharpe", "total_return", "block_length", "bootstrap_ci", "spa_pvalue", "spa_best_pvalue",
           "deflated_sharpe", "significance", "MIN_SESSIONS"]


def _arr(x: Sequence[float] | np.ndarray | pd.Series, name: str = "returns") -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D series of per-session returns, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return a


def sharpe(returns: Sequence[float] | np.ndarray, periods: int = 252) -> float:
    """Annualised Sharpe ratio of per-session returns (ddof 1, ×√periods); 0.0 without variation."""
    r = np.asarray(returns, dtype=float)
    if len(r) < 2:
        return 0.0
    sd = r.std(ddof=1)
    return float(r.mean() / sd * math.sqrt(periods)) if sd > 0 else 0.0


def total_return(returns: Sequence[float] | np.ndarray) -> float:
    """Compounded return ∏(1 + r) − 1."""
    r = np.asarray(returns, dtype=float)
    return float(np.prod(1.0 + r) - 1.0)


def block_length(returns: np.ndarray) -> int:
    """Politis–White optimal mean block length for the stationary bootstrap (at least 1)."""
    r = np.asarray(returns, dtype=float)
    if len(r) < 4 or r.std() == 0:
        return 1
    from arch.bootstrap import optimal_block_length
    try:
        b = float(optimal_block_length(r)["stationary"].iloc[0])
    except Exception:  # pragma: no cover - numerical corner cases in arch
        b = len(r) ** (1 / 3)
    if not math.isfinite(b):
        b = len(r) ** (1 / 3)
    return int(min(max(round(b), 1), max(len(r) // 4, 1)))


def bootstrap_ci(returns: Sequence[float] | np.ndarray, stat: str = "sharpe", level: float = 0.95,
                 reps: int = 2000, seed: int = 0, periods: int = 252) -> Optional[tuple[float, float]]:
    """Stationary-bootstrap percentile interval for ``stat`` ("sharpe" or "total_return")."""
    r = _arr(returns)
    if stat not in ("sharpe", "total_return"):
        raise ValueError(f"stat: expected 'sharpe' or 'total_return', got {stat!r}")
    if not 0 < level < 1:
        raise ValueError(f"level: expected a probability in (0, 1), got {level}")
    if len(r) < MIN_SESSIONS:
        return None
    from arch.bootstrap import StationaryBootstrap
    fn = (lambda x: sharpe(x, periods)) if stat == "sharpe" else total_return
    bs = StationaryBootstrap(block_length(r), r, seed=np.random.default_rng(seed))
    draws = np.array([fn(data[0][0]) for data in bs.bootstrap(reps)])
    lo, hi = np.quantile(draws, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def _align(a: Sequence[float] | np.ndarray | pd.Series, b: Sequence[float] | np.ndarray | pd.Series,
           names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(a, pd.Series) and isinstance(b, pd.Series):
        j = pd.concat([a, b], axis=1, join="inner")
        return _arr(j.iloc[:, 0], names[0]), _arr(j.iloc[:, 1], names[1])
    x, y = _arr(a, names[0]), _arr(b, names[1])
    if len(x) != len(y):
        raise ValueError(f"{names[0]} has {len(x)} sessions but {names[1]} has {len(y)}: "
                         "compare returns on the same sessions")
    return x, y


def _spa(benchmark: np.ndarray, models: np.ndarray, reps: int, seed: int) -> Optional[float]:
    """SPA consistent p-value on returns (losses are −returns)."""
    diff = models - benchmark[:, None]
    if len(benchmark) < MIN_SESSIONS:
        return None
    if np.all(np.abs(diff) < 1e-15):
        return 1.0  # identical to the benchmark: certainly no better
    if (diff.mean(axis=0) <= 0).all():
        # Hansen's statistic is max(0, max_k t_k) = 0 here, so P(T* >= T) = 1 (arch's strict
        # comparison would give about 0.5 for models far below the benchmark)
        return 1.0
    from arch.bootstrap import SPA
    keep = diff.std(axis=0) > 0
    if not keep.any():  # every model differs by a constant: the sign decides
        return 0.0 if (diff.mean(axis=0) > 0).any() else 1.0
    bl = block_length(diff[:, keep].mean(axis=1))
    spa = SPA(-benchmark, -models[:, keep], block_size=bl, reps=reps, bootstrap="stationary",
              studentize=True, seed=np.random.default_rng(seed))
    spa.compute()
    return float(spa.pvalues["consistent"])


def spa_pvalue(strategy_returns: Sequence[float] | np.ndarray | pd.Series,
               benchmark_returns: Sequence[float] | np.ndarray | pd.Series,
               reps: int = 2000, seed: int = 0) -> Optional[float]:
    """Hansen's SPA p-value of one strategy against a benchmark on the same sessions."""
    s, b = _align(strategy_returns, benchmark_returns, ("strategy_returns", "benchmark_returns"))
    return _spa(b, s[:, None], reps, seed)


def spa_best_pvalue(model_returns: np.ndarray, benchmark_returns: Sequence[float] | np.ndarray,
                    reps: int = 2000, seed: int = 0) -> Optional[float]:
    """Hansen's SPA p-value that the best of M models (columns of a T×M array) beats the benchmark."""
    m = np.asarray(model_returns, dtype=float)
    if m.ndim == 1:
        m = m[:, None]
    if m.ndim != 2:
        raise ValueError(f"model_returns: expected a T×M array, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError("model_returns: contains NaN or infinite values")
    b = _arr(benchmark_returns, "benchmark_returns")
    if len(b) != m.shape[0]:
        raise ValueError(f"model_returns has {m.shape[0]} sessions but benchmark_returns has {len(b)}")
    return _spa(b, m, reps, seed)


def deflated_sharpe(best_returns: Sequence[float] | np.ndarray, trial_sharpes: Sequence[float] | np.ndarray,
                    n_trials: Optional[int] = None) -> Optional[float]:
    """Deflated Sharpe Ratio: P(true Sharpe of the chosen trial > the best expected from luck).

    ``trial_sharpes`` are every trial's per-period (not annualised) Sharpe ratios; ``n_trials``
    defaults to their count and may be larger (trials whose returns were not kept still count).
    """
    r = _arr(best_returns, "best_returns")
    t = len(r)
    sr_all = np.asarray(trial_sharpes, dtype=float)
    sr_all = sr_all[np.isfinite(sr_all)]
    n = int(n_trials if n_trials is not None else len(sr_all))
    if n < 1:
        raise ValueError(f"n_trials: expected at least 1, got {n}")
    if t < MIN_SESSIONS or r.std(ddof=1) == 0:
        return None
    sr = r.mean() / r.std(ddof=1)
    if n > 1 and len(sr_all) > 1:
        v = sr_all.var(ddof=1)
        sr0 = math.sqrt(v) * ((1 - EULER_GAMMA) * stats.norm.ppf(1 - 1 / n)
                              + EULER_GAMMA * stats.norm.ppf(1 - 1 / (n * math.e)))
    else:
        sr0 = 0.0
    skew = float(stats.skew(r))
    kurt = float(stats.kurtosis(r, fisher=False))
    denom = 1 - skew * sr + (kurt - 1) / 4 * sr ** 2
    if denom <= 0:
        return None
    return float(stats.norm.cdf((sr - sr0) * math.sqrt(t - 1) / math.sqrt(denom)))


def _fmt_p(p: Optional[float]) -> str:
    return "n/a" if p is None else (f"{p:.3f}" if p >= 0.001 else "<0.001")


def significance(strategy_returns: Sequence[float] | np.ndarray | pd.Series,
                 baselines: Mapping[str, Sequence[float] | np.ndarray | pd.Series],
                 reps: int = 2000, seed: int = 0, level: float = 0.95, alpha: float = 0.05,
                 labels: Optional[Mapping[str, str]] = None) -> dict:
    """The report's significance block for one strategy against its baselines (same sessions).

    Returns ``{"sharpe_ci", "return_ci", "spa_pvalue": {baseline: p}, "spa_pvalue_baseline_better":
    {baseline: p}, "n_sessions", "level", "alpha", "method", "words"}``; intervals and p-values are
    ``None`` when there are too few sessions. ``labels`` names the baselines in ``words``
    (``{"buy_and_hold": "buy-and-hold"}``). A strategy the baseline beats (the reverse SPA test) is
    said to be worse than it, never "not distinguishable".
    """
    labels = dict(labels or {})
    s = strategy_returns
    r = _arr(s)
    out: dict = {
        "n_sessions": int(len(r)), "level": level, "alpha": alpha,
        "method": (f"stationary bootstrap ({reps} resamples, Politis-White block length) for the "
                   f"intervals; Hansen's SPA (consistent p-value) against each baseline"),
        "sharpe_ci": None, "return_ci": None, "spa_pvalue": {}, "spa_pvalue_baseline_better": {},
    }
    ci = bootstrap_ci(r, "sharpe", level, reps, seed)
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
