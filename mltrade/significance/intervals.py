"""Could this figure be luck? Studentized circular-block-bootstrap intervals (Ledoit & Wolf 2008) for the
Sharpe ratio, the total return and the Sharpe difference of a strategy and a baseline, with the
Politis–White block lengths they rest on. Face: :mod:`mltrade.significance`."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from mltrade.annualise import DEFAULT_PERIODS

MIN_SESSIONS = 10
#: smallest block of the interval bootstrap, as a multiple of n^(1/3)
CI_BLOCK_FLOOR = 1.5


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
