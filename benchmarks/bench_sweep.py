"""Sweep benchmark: parameter sets per second, vectorised evaluator vs KnockoutBroker runs, and a full sweep.

1. One year of 5-minute sample bars; N random IntradayMomentum parameter sets
   evaluated by the vectorised evaluator (all at once; best of --repeat runs),
   by the path it replaced (``sweep_before.py``: full arrays and a sparse-table
   bisection; it must agree cell for cell) and a few of them by full backtrader
   runs through KnockoutBroker. Prints sets/s of each and the ratios (target:
   >= 20,000 sets/s for the evaluator), checks that the broker gives the same
   final equity for the sets it ran, and names the device (CPU) it ran on.
2. A 1,000-trial Optuna sweep (`mltrade optimize strategy`) on one year of the
   sample (target: under a minute), then its best trial re-run through the
   broker on the validation folds and the held-out test range: both figures
   printed, with the sweep's SPA p-value and deflated Sharpe over every trial.

Run: python benchmarks/bench_sweep.py [--sets 2000] [--repeat 5] [--broker-sets 5] [--trials 1000] [--year 2017]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def device() -> str:
    """The CPU this ran on (model, cores, load) and the numpy version."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"CPU {model}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
            f"numpy {np.__version__} (the evaluator is numpy on the CPU, single-threaded)")


def best_time(fn, repeat: int) -> float:
    """Shortest wall time of ``repeat`` calls (the least disturbed by other load)."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--broker-sets", type=int, default=5)
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--year", type=int, default=2017)
    args = ap.parse_args()

    from mltrade.config import load_config
    from mltrade.feeds.sample import sample_intraday
    from mltrade.strategies.reference import IntradayMomentum
    from mltrade.sweep.broker_run import run_broker
    from mltrade.brokers.vectorised import evaluate, param_sets, session_grid
    from mltrade.sweep.settings import SweepSettings
    from mltrade.sweep.study import optimize
    from sweep_before import evaluate_before

    bars = sample_intraday(f"{args.year}-01-01", f"{args.year}-12-31")
    grid = session_grid(bars)
    print(f"data: {len(bars):,} synthetic 5-minute bars, {grid.n_sessions} sessions ({args.year})")
    print(f"device: {device()}")
    rng = np.random.default_rng(0)
    n = args.sets
    sets = {"decision_bar": rng.integers(3, 61, n), "distance": rng.uniform(0.01, 0.10, n),
            "stop": rng.uniform(0.3, 0.95, n), "min_move": rng.uniform(0.0, 0.01, n),
            "spread": 0.01, "commission_fixed": 1.0, "stake_fraction": 0.25, "cash": 10_000.0}
    p = param_sets(sets)
    res, before = evaluate(grid, p), evaluate_before(grid, p)  # warm-up (per-grid tables), and the agreement check
    same = all(np.array_equal(getattr(res, f), getattr(before, f), equal_nan=True)
               for f in ("status", "direction", "entry_bar", "exit_bar", "exit_reason", "barrier", "entry_price",
                         "exit_price", "size", "fees", "pnl", "cash", "final_cash"))
    t_vec = best_time(lambda: evaluate(grid, p), args.repeat)
    t_old = best_time(lambda: evaluate_before(grid, p), args.repeat)
    vec_rate, old_rate = n / t_vec, n / t_old

    def laid_out():
        r = evaluate(grid, p)
        return [getattr(r, f) for f in ("status", "exit_reason", "entry_price", "exit_price", "size", "fees", "pnl")]
    full_rate = n / best_time(laid_out, args.repeat)
    rows = [{k: (v[i] if isinstance(v, np.ndarray) else v) for k, v in sets.items()} for i in range(args.broker_sets)]
    t = time.perf_counter()
    worst = 0.0
    for i, row in enumerate(rows):
        ref = run_broker(bars, IntradayMomentum, row)
        worst = max(worst, abs(ref["final_value"] - res.final_cash[i]))
    t_brk = time.perf_counter() - t
    brk_rate = len(rows) / t_brk
    print(f"evaluator before (sparse-table bisection, full arrays): {n} sets in {t_old:.3f} s = {old_rate:,.0f} sets/s")
    print(f"evaluator now (running-extreme look-ups, compact cells): {n} sets in {t_vec:.3f} s = {vec_rate:,.0f} sets/s "
          f"(target >= 20,000); {vec_rate / old_rate:.1f}x before; every trade identical: {same}")
    print(f"  with every trade laid out as (sets, sessions) arrays: {full_rate:,.0f} sets/s "
          f"({full_rate / old_rate:.1f}x before; a sweep needs only the cash)")
    print(f"broker:    {len(rows)} sets in {t_brk:.2f} s = {brk_rate:.2f} sets/s")
    print(f"ratio evaluator/broker: {vec_rate / brk_rate:,.0f}x; largest final-equity difference on the "
          f"{len(rows)} common sets: {worst:.6f}")

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None)
        s = SweepSettings(strategy="momentum", trials=args.trials, start=f"{args.year}-01-01",
                          end=f"{args.year}-12-31", out=tmp, progress=False)
        t, c = time.perf_counter(), time.process_time()
        summary = optimize(cfg, s)
        total, cpu = time.perf_counter() - t, time.process_time() - c
        print(f"sweep: {args.trials} trials in {summary['search_seconds']:.1f} s search "
              f"({total:.1f} s wall, {cpu:.1f} s CPU of this process with broker confirmation and report; "
              f"target < 60 s; load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores), "
              f"{summary['trials_pruned']} pruned")
        c = summary["confirmation"][0]
        print(f"best trial {summary['best_trial']}: {summary['best_params']}")
        print(f"  validation objective (mean log growth): evaluator {c['search_value']:.6f}, "
              f"broker {c['broker_value']:.6f}")
        tb, tv = summary["test_best"], summary["test_vector"]
        print(f"  held-out test {'..'.join(summary['layout']['test'])}: evaluator final equity "
              f"{tv['best_final_cash']:.2f}, broker {tb['final_value']:.2f} ({tb['trades']} trades, "
              f"total return {tb['total_return']:+.2%}; default params {summary['test_default']['total_return']:+.2%})")
        sig = summary["significance"]
        print(f"  significance over all {sig['trials']} trials: SPA p-value {sig['spa_pvalue']}, deflated Sharpe "
              f"{sig['deflated_sharpe']} ({sig['sessions']} validation sessions)")
        print(f"  {sig['words']}")
        print("  note: synthetic intraday bars (real daily NASDAQ OHLC); figures illustrate speed, not an edge")


if __name__ == "__main__":
    main()
