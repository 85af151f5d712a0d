"""Does the best of several beat a benchmark beyond luck? Hansen's (2005) SPA test, Romano & Wolf's
(2005) StepM and Bailey & López de Prado's (2014) Deflated Sharpe Ratio. Face: :mod:`mltrade.significance`."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from mltrade.significance.intervals import MIN_SESSIONS, _align, _arr, block_length, block_lengths

EULER_GAMMA = 0.5772156649015329


# --- Hansen's studentized SPA and Romano-Wolf StepM ---------------------------------------------

def stationary_indices(n: int, block: int, reps: int, seed: int = 0) -> np.ndarray:
    """``reps`` × ``n`` resample indices of ``arch.bootstrap.StationaryBootstrap`` (mean block ``block``)."""
    from arch.bootstrap import StationaryBootstrap

    bs = StationaryBootstrap(block, np.zeros(n), seed=np.random.default_rng(seed))
    return np.stack([np.asarray(bs.update_indices()) for _ in range(reps)])


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    reps = idx.shape[0]
    flat = (idx + n * np.arange(reps)[:, None]).ravel()
    return np.bincount(flat, minlength=reps * n).reshape(reps, n).astype(float)


def bootstrap_means(d: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Means of the resampled rows of ``d`` (..., n, K) for each row of ``idx`` (reps, n): (..., reps, K)."""
    n = d.shape[-2]
    out = []
    for c0 in range(0, len(idx), 250):
        c = _counts(idx[c0:c0 + 250], n) / n
        out.append(np.moveaxis(np.tensordot(c, d, axes=([1], [-2])), 0, -2))     # BLAS
    return np.concatenate(out, axis=-2)


def hansen_omega(d: np.ndarray, block: float) -> np.ndarray:
    """√n-scaled standard deviation of the mean of each column of ``d`` (..., n, K): the stationary
    bootstrap's own variance in closed form (Politis & Romano 1994; Hansen 2005 eq. 5)."""
    n = d.shape[-2]
    e = d - d.mean(axis=-2, keepdims=True)
    f = np.fft.rfft(e, n=2 * n, axis=-2)
    acov = np.fft.irfft(f * np.conj(f), n=2 * n, axis=-2)[..., :n, :] / n          # lags 0..n-1
    q = 1.0 / block
    i = np.arange(1, n, dtype=float)
    kappa = (1 - i / n) * (1 - q) ** i + (i / n) * (1 - q) ** (n - i)
    var = acov[..., 0, :] + 2.0 * np.einsum("i,...ik->...k", kappa, acov[..., 1:, :])
    return np.sqrt(np.maximum(var, 0.0))


def spa_core(d: np.ndarray, means_star: np.ndarray, omega: np.ndarray,
             sq_star: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """Hansen's studentized SPA, consistent p-value, vectorised over leading axes.

    ``d``: (..., n, K) model-minus-benchmark returns; ``means_star``: (..., reps, K) their bootstrap
    means; ``omega``: (..., K) from :func:`hansen_omega`. Statistic T = max(0, max_k √n d̄_k/ω_k);
    resamples are recentred at d̄_k·1{√n d̄_k/ω_k ≥ −√(2 ln ln n)} (Hansen's consistent threshold).
    With ``sq_star`` (bootstrap means of d², same shape as ``means_star``) each resample is
    studentized by its own ω*_k = ω_k·sd*_k/sd_k (the resample's spread against the sample's), as the
    statistic is by its own ω̂; this keeps the max of many t-statistics at its level in short
    samples. Returns (T, p) with p = P*(T* ≥ T).
    """
    n = d.shape[-2]
    dbar = d.mean(axis=-2)
    rn = math.sqrt(n)
    om = omega[..., None, :]
    if sq_star is not None:
        var = d.var(axis=-2)[..., None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            om = om * np.sqrt(np.maximum(sq_star - means_star ** 2, 0.0) / var)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(omega > 0, rn * dbar / omega, -np.inf)
        stat = np.maximum(0.0, t.max(axis=-1))
        mu = np.where(t >= -math.sqrt(2.0 * math.log(math.log(n))), dbar, 0.0)
        z = np.where(om > 0, rn * (means_star - mu[..., None, :]) / om, -np.inf)
    tstar = np.maximum(0.0, z.max(axis=-1))
    p = (tstar >= stat[..., None] - 1e-12).mean(axis=-1)
    return stat, p


def spa_pvalues_many(d: np.ndarray, reps: int = 2000, seed: int = 0, block: Optional[int] = None) -> np.ndarray:
    """Studentized SPA p-values of R independent problems at once: ``d`` (R, n, K) model-minus-benchmark
    returns (every column varying). Problems with the same block length (Politis–White of the
    mean difference unless ``block``) share the resample indices. The same computation as
    :func:`spa_test`, vectorised for simulations."""
    d = np.asarray(d, dtype=float)
    blocks = np.full(len(d), block) if block else block_lengths(d.mean(axis=2))
    p = np.empty(len(d))
    for b in np.unique(blocks):
        sel = np.flatnonzero(blocks == b)
        idx = stationary_indices(d.shape[1], int(b), reps, seed)
        p[sel] = spa_core(d[sel], bootstrap_means(d[sel], idx), hansen_omega(d[sel], int(b)),
                          bootstrap_means(d[sel] ** 2, idx))[1]
    return p


def _models_matrix(model_returns, benchmark_returns) -> tuple[np.ndarray, np.ndarray]:
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
    return m, b


def spa_test(model_returns: np.ndarray, benchmark_returns: Sequence[float] | np.ndarray,
             reps: int = 2000, seed: int = 0, block: Optional[int] = None,
             restudentize: bool = True) -> Optional[dict]:
    """Hansen's (2005) studentized SPA test of M models (columns of a T×M array of per-session
    returns) against one benchmark, H0: no model beats it (mean return difference ≤ 0).

    Returns ``{"pvalue", "statistic", "tstats", "block"}`` (``None`` with fewer than
    :data:`MIN_SESSIONS` sessions); on ``arch``'s stationary-bootstrap indices. ``restudentize=False``
    divides every resample by the sample's ω̂ (Hansen's original form; with one model, or equal
    variances, it is ``arch``'s ``SPA`` p-value exactly).
    """
    m, b = _models_matrix(model_returns, benchmark_returns)
    n = len(b)
    if n < MIN_SESSIONS:
        return None
    d = m - b[:, None]
    dbar = d.mean(axis=0)
    sd = d.std(axis=0)
    const = sd <= 1e-12 * (1.0 + np.abs(d).max(axis=0))
    if (const & (dbar > 1e-15)).any():    # better by the same amount in every session
        return {"pvalue": 0.0, "statistic": math.inf, "tstats": None, "block": 1}
    if const.all() or (dbar <= 0).all():
        # T = max(0, max_k t_k) = 0, so P(T* >= T) = 1 (Hansen's definition)
        return {"pvalue": 1.0, "statistic": 0.0, "tstats": None, "block": None}
    d = d[:, ~const]
    blk = int(block or block_length(d.mean(axis=1)))
    omega = hansen_omega(d, blk)
    idx = stationary_indices(n, blk, reps, seed)
    stat, p = spa_core(d, bootstrap_means(d, idx), omega, bootstrap_means(d ** 2, idx) if restudentize else None)
    t = math.sqrt(n) * d.mean(axis=0) / omega
    return {"pvalue": float(p), "statistic": float(stat), "tstats": t.tolist(), "block": blk}


def spa_pvalue(strategy_returns: Sequence[float] | np.ndarray | pd.Series,
               benchmark_returns: Sequence[float] | np.ndarray | pd.Series,
               reps: int = 2000, seed: int = 0) -> Optional[float]:
    """Hansen's SPA p-value of one strategy against a benchmark on the same sessions."""
    s, b = _align(strategy_returns, benchmark_returns, ("strategy_returns", "benchmark_returns"))
    res = spa_test(s[:, None], b, reps, seed)
    return None if res is None else res["pvalue"]


def spa_best_pvalue(model_returns: np.ndarray, benchmark_returns: Sequence[float] | np.ndarray,
                    reps: int = 2000, seed: int = 0) -> Optional[float]:
    """Hansen's studentized SPA p-value that the best of M models (columns of a T×M array) beats the benchmark."""
    res = spa_test(model_returns, benchmark_returns, reps, seed)
    return None if res is None else res["pvalue"]


def stepm(model_returns: np.ndarray, benchmark_returns: Sequence[float] | np.ndarray, alpha: float = 0.05,
          reps: int = 2000, seed: int = 0, block: Optional[int] = None) -> list[int]:
    """Romano & Wolf (2005) studentized StepM: the columns that beat the benchmark, controlling the
    family-wise error rate at ``alpha`` (indices into the columns, best first)."""
    m, b = _models_matrix(model_returns, benchmark_returns)
    n = len(b)
    if n < MIN_SESSIONS:
        return []
    d = m - b[:, None]
    dbar = d.mean(axis=0)
    sd = d.std(axis=0)
    const = sd <= 1e-12 * (1.0 + np.abs(d).max(axis=0))
    better = set(np.flatnonzero(const & (dbar > 1e-15)).tolist())
    live = np.flatnonzero(~const)
    if len(live):
        dl = d[:, live]
        blk = int(block or block_length(dl.mean(axis=1)))
        omega = hansen_omega(dl, blk)
        star = bootstrap_means(dl, stationary_indices(n, blk, reps, seed))
        rn = math.sqrt(n)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(omega > 0, rn * dl.mean(axis=0) / omega, -np.inf)
            z = np.where(omega > 0, rn * (star - dl.mean(axis=0)) / omega, -np.inf)   # centred at d̄
        rejected = np.zeros(len(live), bool)
        while not rejected.all():
            crit = np.quantile(z[:, ~rejected].max(axis=1), 1 - alpha)
            new = ~rejected & (t > crit)
            if not new.any():
                break
            rejected |= new
        better |= set(live[rejected].tolist())
    return sorted(better, key=lambda j: -dbar[j])


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
