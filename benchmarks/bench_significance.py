"""Size and power of the studentized SPA, coverage of the studentized block-bootstrap intervals.

1. SPA: rejection rates at 5 % of ``mltrade.significance`` (Hansen's studentized SPA, consistent
   p-value) under the least favourable null (every model's edge 0) and on the issue-19 case (49
   zero-mean trials at 3 % daily volatility, one at 0.5 % with +12 bp a day), beside ``arch``'s
   ``SPA`` (raw means; ``studentize=True`` changes only a label in arch 8.0).
2. Coverage of the 95 % intervals for the Sharpe ratio (true annualised Sharpe 1.0, 1 % daily
   volatility) and the total return (at the true growth rate), 250 sessions: iid normal, AR(1) 0.3,
   t(3); the studentized circular block bootstrap (now) beside the stationary-bootstrap percentile
   interval it replaced (before).
Run: nice python benchmarks/bench_significance.py [--runs 2000] [--reps 999] [--quick]
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np

from mltrade import significance as S


def spa_table(runs: int, reps: int) -> None:
    from arch.bootstrap import SPA

    print(f"SPA rejection rate at 5% ({reps} bootstrap resamples; standard error at 0.05 over {runs} runs: "
          f"{math.sqrt(0.05 * 0.95 / runs):.3f})")
    print(f"{'case':62s} {'n':>5s} {'K':>4s} {'runs':>6s} {'studentized':>12s} {'arch (raw)':>11s}")
    rng = np.random.default_rng(1)
    cases = [("null, equal volatility (1 %)", 250, 1, 0.0, False),
             ("null, equal volatility (1 %)", 250, 10, 0.0, False),
             ("null, equal volatility (1 %)", 250, 50, 0.0, False),
             ("null, 49 at 3 % + 1 at 0.5 %, all zero mean", 500, 50, 0.0, True),
             ("alternative: 49 at 3 % zero mean + 1 at 0.5 % with +12 bp/day", 500, 50, 0.0012, True)]
    for name, n, k, edge, mixed in cases:
        r = runs if k <= 10 else max(runs // 4, 100)
        d = rng.standard_normal((r, n, k)) * (0.03 if mixed else 0.01)
        if mixed:
            d[:, :, 0] = rng.standard_normal((r, n)) * 0.005 + edge
        p = S.spa_pvalues_many(d, reps=reps, seed=2)
        n_arch = min(r, 40)
        raw = []
        for i in range(n_arch):
            bl = S.block_length(d[i].mean(axis=1))
            t = SPA(np.zeros(n), -d[i], block_size=bl, reps=reps, bootstrap="stationary", studentize=True,
                    seed=np.random.default_rng(i))
            t.compute()
            raw.append(t.pvalues["consistent"])
        print(f"{name:62s} {n:5d} {k:4d} {r:6d} {np.mean(p < 0.05):12.3f} {np.mean(np.array(raw) < 0.05):8.3f} "
              f"({n_arch} runs)", flush=True)


def _worlds(rng, r, n):
    mu, sd = 0.01 / math.sqrt(252), 0.01
    u = rng.standard_normal((r, n + 50))
    ar = np.empty_like(u)
    ar[:, 0] = u[:, 0] / math.sqrt(1 - 0.09)
    for t in range(1, n + 50):
        ar[:, t] = 0.3 * ar[:, t - 1] + u[:, t]
    return {"iid normal": mu + sd * rng.standard_normal((r, n)),
            "AR(1) 0.3": mu + sd * ar[:, 50:] * math.sqrt(1 - 0.09),
            "t(3)": mu + sd * rng.standard_t(3, (r, n)) / math.sqrt(3.0)}


def _percentile_before(x: np.ndarray, reps: int) -> tuple[np.ndarray, np.ndarray]:
    """The interval before issue 19: stationary bootstrap (Politis-White block), percentile, per series."""
    sh, tr = np.empty((len(x), 2)), np.empty((len(x), 2))
    blocks = S.block_lengths(x, "stationary")
    for i, row in enumerate(x):
        idx = S.stationary_indices(len(row), int(blocks[i]), reps, seed=i)
        y = row[idx]
        s = y.mean(axis=1) / y.std(axis=1, ddof=1) * math.sqrt(252)
        g = np.prod(1 + y, axis=1) - 1
        sh[i], tr[i] = np.quantile(s, [0.025, 0.975]), np.quantile(g, [0.025, 0.975])
    return sh, tr


def coverage_table(runs: int, reps: int, before_runs: int) -> None:
    n = 250
    print(f"\nCoverage of the 95% intervals, {n} sessions, true annualised Sharpe 1.0 (standard error at 0.95 "
          f"over {runs} series: {math.sqrt(0.05 * 0.95 / runs):.3f})")
    print(f"{'returns':12s} {'Sharpe now':>11s} {'Sharpe before':>14s} {'total return now':>17s} "
          f"{'total return before':>20s} {'median width now':>17s}")
    rng = np.random.default_rng(7)
    big = np.random.default_rng(99)
    mu, sd = 0.01 / math.sqrt(252), 0.01
    marg = {"iid normal": mu + sd * big.standard_normal(2_000_000),
            "t(3)": mu + sd * big.standard_t(3, 2_000_000) / math.sqrt(3.0)}
    for name, x in _worlds(rng, runs, n).items():
        m = marg["t(3)" if name == "t(3)" else "iid normal"]
        truth = math.expm1(n * np.log1p(np.maximum(m, -0.99)).mean())
        ci = S.sharpe_ci_many(x, reps=reps, seed=1)
        tr = S.total_return_ci_many(x, reps=reps, seed=1)
        bs, bt = _percentile_before(x[:before_runs], min(reps, 2000))
        cov = lambda c, v: float(np.mean((c[:, 0] <= v) & (v <= c[:, 1])))   # a NaN interval (a -100 % day) misses
        print(f"{name:12s} {cov(ci, 1.0):11.3f} {cov(bs, 1.0):14.3f} {cov(tr, truth):17.3f} {cov(bt, truth):20.3f} "
              f"{np.median(ci[:, 1] - ci[:, 0]):17.2f}", flush=True)
    print(f"(before: the first {before_runs} series)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=999)
    ap.add_argument("--before-runs", type=int, default=500)
    ap.add_argument("--quick", action="store_true", help="runs 400, reps 399, before 200")
    a = ap.parse_args()
    if a.quick:
        a.runs, a.reps, a.before_runs = 400, 399, 200
    t0 = time.perf_counter()
    spa_table(a.runs, min(a.reps, 999))
    coverage_table(a.runs, a.reps, a.before_runs)
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
