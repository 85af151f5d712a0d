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
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from mltrade.annualise import DEFAULT_PERIODS, sessions_per_year, sharpe, total_return  # noqa: F401 (faces)

MIN_SESSIONS = 10
#: smallest block of the interval bootstrap, as a multiple of n^(1/3)
CI_BLOCK_FLOOR = 1.5
EULER_GAMMA = 0.5772156649015329

__all__ = ["sharpe", "total_return", "sessions_per_year", "block_length", "block_lengths", "bootstrap_ci",
           "sharpe_ci_many", "total_return_ci_many", "sharpe_diff_test", "bootstrap_t", "stationary_indices",
           "bootstrap_means", "hansen_omega", "spa_core", "spa_pvalues_many", "spa_test", "stepm",
           "spa_pvalue", "spa_best_pvalue",
           "deflated_sharpe", "significance", "MIN_SESSIONS"]


def _arr(x: Sequence[float] | np.ndarray | pd.Series, name: str = "returns") -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D series of per-session returns, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return a


def block_lengths(series: np.ndarray, kind: str = "stationary") -> np.ndarray:
    """Politis–White optimal (mean) block length of each row of an R×n array (``arch``'s estimate,
    ``kind`` "stationary" or "circular"), rounded, at least 1 and at most n/4."""
    x = np.atleast_2d(np.asarray(series, dtype=float))
    n = x.shape[1]
    out = np.ones(len(x), dtype=int)
    ok = (x.std(axis=1) > 0) & (n >= 4)
    if ok.any():
        from arch.bootstrap import optimal_block_length
        with np.errstate(all="ignore"):
            try:
                b = optimal_block_length(x[ok].T)[kind].to_numpy(dtype=float)
            except Exception:  # pragma: no cover - numerical corner cases in arch
                b = np.full(int(ok.sum()), n ** (1 / 3))
        b = np.where(np.isfinite(b), b, n ** (1 / 3))
        out[ok] = np.clip(np.round(b), 1, max(n // 4, 1)).astype(int)
    return out


def block_length(returns: np.ndarray, kind: str = "stationary") -> int:
    """Politis–White optimal (mean) block length for the stationary (or circular) bootstrap (at least 1)."""
    return int(block_lengths(np.asarray(returns, dtype=float)[None, :], kind)[0])


# --- studentized circular block bootstrap intervals (Ledoit & Wolf 2008) -------------------------

def _sharpe_g(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sharpe (ddof 0) from the means (E r, E r²) on the last axis, and its gradient."""
    v = np.maximum(m[..., 1] - m[..., 0] ** 2, 1e-300)
    g = m[..., 0] / np.sqrt(v)
    grad = np.stack([m[..., 1] / v ** 1.5, -0.5 * m[..., 0] / v ** 1.5], axis=-1)
    return g, grad


def _diff_g(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sharpe(a) − Sharpe(b) from the means (E a, E b, E a², E b²), and its gradient."""
    ga, da = _sharpe_g(m[..., [0, 2]])
    gb, db = _sharpe_g(m[..., [1, 3]])
    grad = np.stack([da[..., 0], -db[..., 0], da[..., 1], -db[..., 1]], axis=-1)
    return ga - gb, grad


def _mean_g(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return m[..., 0], np.ones_like(m)


def _hac(y: np.ndarray, b: int) -> np.ndarray:
    """Bartlett-kernel long-run covariance (lag b − 1) of y (..., n, p): the overlapping-block
    estimator that the block bootstrap's own variance matches (Götze & Künsch)."""
    n = y.shape[-2]
    e = y - y.mean(axis=-2, keepdims=True)
    psi = np.einsum("...ti,...tj->...ij", e, e) / n
    for lag in range(1, min(b, n)):
        w = 1.0 - lag / b
        g = np.einsum("...ti,...tj->...ij", e[..., lag:, :], e[..., :-lag, :]) / n
        psi = psi + w * (g + np.swapaxes(g, -1, -2))
    return psi


def _quad(grad: np.ndarray, psi: np.ndarray) -> np.ndarray:
    return np.einsum("...i,...ij,...j->...", grad, psi, grad)


def bootstrap_t(y: np.ndarray, func, block: int, reps: int = 2000, level: float = 0.95,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Symmetric studentized circular-block-bootstrap interval for ``func`` of the means of ``y``.

    ``y``: (R, n, p) — R independent series (vectorised; they share the resample indices) of n
    sessions and p moments; ``func(m) -> (value, gradient)`` on the means (last axis p). The
    standard error is the delta method with a Bartlett HAC (lag ``block`` − 1) on the data and
    the non-overlapping block variance on each resample (Ledoit & Wolf 2008, section 3.2).
    Returns (estimate, standard error, q, |t*|) per series (|t*|: (R, reps)): interval est ± q·se.
    """
    y = np.asarray(y, dtype=float)
    r_, n, p = y.shape
    b = int(max(1, min(block, n)))
    l = -(-n // b)                                   # whole blocks covering n sessions
    nb = l * b
    est, grad = func(y.mean(axis=1))
    se = np.sqrt(np.maximum(_quad(grad, _hac(y, b)), 0.0) / n)
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n, size=(reps, l))                           # circular blocks of b
    wrap = np.concatenate([y, y[:, :b - 1, :]], axis=1)
    cs = np.concatenate([np.zeros((r_, 1, p)), np.cumsum(wrap, axis=1)], axis=1)   # (R, n + b, p)
    chunk = max(1, int(4_000_000 // max(1, reps * l * p)))
    tabs = np.empty((r_, reps))
    for c0 in range(0, r_, chunk):
        c = cs[c0:c0 + chunk]
        bm = (c[:, starts + b, :] - c[:, starts, :]) / b                  # block means (c, reps, l, p)
        m = bm.mean(axis=2)                                               # (c, reps, p)
        e = bm - m[:, :, None, :]
        g, gr = func(m)
        # ∇'Ψ*∇ with Ψ* = b/l Σ_j e_j e_j' (the block variance), as one projection per block
        proj = np.einsum("crlp,crp->crl", e, gr)
        se_s = np.sqrt(b * np.einsum("crl,crl->cr", proj, proj) / l / nb)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.abs(g - est[c0:c0 + chunk, None]) / se_s
        tabs[c0:c0 + chunk] = np.where(np.isfinite(t), t, 1e12)   # a flat resample: no bound
    return est, se, np.quantile(tabs, level, axis=1), tabs


def _ci_blocks(*series: np.ndarray) -> np.ndarray:
    """Block length per row for an interval: the largest Politis–White (circular) block of the
    rows of each R×n array given and of their squared deviations (volatility clustering), at
    least :data:`CI_BLOCK_FLOOR`·n^(1/3) (9 for a year of sessions): Politis–White's shorter
    blocks leave the Bartlett HAC short of an AR(1)'s long-run variance, and the 95 % interval
    covered 0.93 instead of 0.95 (``benchmarks/bench_significance.py``)."""
    b = [block_lengths(x, "circular") for x in series]
    b += [block_lengths((x - x.mean(axis=1, keepdims=True)) ** 2, "circular") for x in series]
    n = series[0].shape[1]
    floor = min(int(round(CI_BLOCK_FLOOR * n ** (1 / 3))), max(n // 4, 1))
    return np.maximum(np.max(np.stack(b), axis=0), floor)


def sharpe_ci_many(returns: np.ndarray, level: float = 0.95, reps: int = 2000, seed: int = 0,
                   periods: float = DEFAULT_PERIODS, block: Optional[int] = None) -> np.ndarray:
    """Studentized block-bootstrap Sharpe intervals (annualised, ddof 1) for each row of an R×n array.

    Rows sharing a block length (Politis–White unless ``block``) share resample indices. Returns (R, 2).
    """
    x = np.atleast_2d(np.asarray(returns, dtype=float))
    n = x.shape[1]
    blocks = np.full(len(x), block) if block else _ci_blocks(x)
    out = np.full((len(x), 2), np.nan)
    k = math.sqrt(periods) * math.sqrt((n - 1) / n)       # ddof-0 root, reported on the ddof-1 Sharpe
    for b in np.unique(blocks):
        sel = np.flatnonzero(blocks == b)
        y = np.stack([x[sel], x[sel] ** 2], axis=-1)
        est, se, q, _ = bootstrap_t(y, _sharpe_g, int(b), reps, level, seed)
        out[sel, 0], out[sel, 1] = (est - q * se) * k, (est + q * se) * k
    return out


def total_return_ci_many(returns: np.ndarray, level: float = 0.95, reps: int = 2000, seed: int = 0,
                         block: Optional[int] = None) -> np.ndarray:
    """Studentized block-bootstrap intervals of the total return ∏(1 + r) − 1 at the true growth
    rate, exp(n·E log(1 + r)) − 1, for each row of an R×n array. Returns (R, 2) (NaN for a row with a
    return of −100 % or less)."""
    x = np.atleast_2d(np.asarray(returns, dtype=float))
    ok = (x > -1).all(axis=1)                  # a return of -100 % or less has no growth rate: NaN row
    lg = np.log1p(np.where(ok[:, None], x, 0.0))
    n = x.shape[1]
    blocks = np.full(len(x), block) if block else _ci_blocks(lg)
    out = np.full((len(x), 2), np.nan)
    for b in np.unique(blocks[ok]):
        sel = np.flatnonzero((blocks == b) & ok)
        est, se, q, _ = bootstrap_t(lg[sel][..., None], _mean_g, int(b), reps, level, seed)
        out[sel, 0], out[sel, 1] = np.expm1(n * (est - q * se)), np.expm1(n * (est + q * se))
    return out


def bootstrap_ci(returns: Sequence[float] | np.ndarray, stat: str = "sharpe", level: float = 0.95,
                 reps: int = 2000, seed: int = 0, periods: float = DEFAULT_PERIODS) -> Optional[tuple[float, float]]:
    """Studentized circular-block-bootstrap interval (Ledoit & Wolf 2008) for ``stat``
    ("sharpe": annualised, ddof 1; "total_return": at the series' growth rate)."""
    r = _arr(returns)
    if stat not in ("sharpe", "total_return"):
        raise ValueError(f"stat: expected 'sharpe' or 'total_return', got {stat!r}")
    if not 0 < level < 1:
        raise ValueError(f"level: expected a probability in (0, 1), got {level}")
    if len(r) < MIN_SESSIONS or r.std() == 0:
        return None
    if stat == "sharpe":
        lo, hi = sharpe_ci_many(r[None, :], level, reps, seed, periods)[0]
    else:
        if (r <= -1).any():
            return None
        lo, hi = total_return_ci_many(r[None, :], level, reps, seed)[0]
    return float(lo), float(hi)


def sharpe_diff_test(a: Sequence[float] | np.ndarray | pd.Series, b: Sequence[float] | np.ndarray | pd.Series,
                     level: float = 0.95, reps: int = 2000, seed: int = 0,
                     periods: float = DEFAULT_PERIODS) -> Optional[dict]:
    """Ledoit & Wolf (2008): Sharpe(a) − Sharpe(b) on the same sessions (annualised) with its
    studentized block-bootstrap interval and two-sided p-value (H0: equal Sharpe ratios)."""
    x, z = _align(a, b, ("strategy_returns", "baseline_returns"))
    n = len(x)
    if n < MIN_SESSIONS or x.std() == 0 or z.std() == 0:
        return None
    blk = int(_ci_blocks(x[None], z[None])[0])
    y = np.stack([x, z, x ** 2, z ** 2], axis=-1)[None]
    est, se, q, tabs = bootstrap_t(y, _diff_g, blk, reps, level, seed)
    k = math.sqrt(periods) * math.sqrt((n - 1) / n)
    d_hat, s_hat = float(est[0]), float(se[0])
    tstar = tabs[0]
    t_obs = abs(d_hat) / s_hat if s_hat > 0 else math.inf
    p = float((np.sum(tstar >= t_obs) + 1) / (reps + 1))
    return {"difference": d_hat * k, "ci": [float((d_hat - q[0] * s_hat) * k), float((d_hat + q[0] * s_hat) * k)],
            "pvalue": min(p, 1.0), "block": int(blk)}


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
