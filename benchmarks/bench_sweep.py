"""Sweep benchmark: parameter sets per second, vectorised evaluator vs KnockoutBroker runs, and a full sweep.

1. One year of 5-minute sample bars; N random IntradayMomentum parameter sets
   evaluated by the vectorised evaluator (all at once) and a few of them by
   full backtrader runs through KnockoutBroker. Prints sets/s of each, the
   ratio (target: >= 1,000 sets/s for the evaluator on 2 cores) and checks
   that both give the same final equity for the sets run through the broker.
2. A 1,000-trial Optuna sweep (`mltrade optimize strategy`) on one year of the
   sample (target: under a minute), then its best trial re-run through the
   broker on the validation folds and the held-out test range: both figures printed.

Run: python benchmarks/bench_sweep.py [--sets 2000] [--broker-sets 5] [--trials 1000] [--year 2017]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", type=int, default=2000)
    ap.add_argument("--broker-sets", type=int, default=5)
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--year", type=int, default=2017)
    args = ap.parse_args()

    from mltrade.config import load_config
    from mltrade.feeds.sample import sample_intraday
    from mltrade.strategies.reference import IntradayMomentum
    from mltrade.sweep.broker_run import run_broker
    from mltrade.sweep.evaluator import evaluate, param_sets, session_grid
    from mltrade.sweep.study import SweepSettings, optimize

    bars = sample_intraday(f"{args.year}-01-01", f"{args.year}-12-31")
    grid = session_grid(bars)
    print(f"data: {len(bars):,} synthetic 5-minute bars, {grid.n_sessions} sessions ({args.year}); "
          f"cores: {os.cpu_count()}")
    rng = np.random.default_rng(0)
    n = args.sets
    sets = {"decision_bar": rng.integers(3, 61, n), "distance": rng.uniform(0.01, 0.10, n),
            "stop": rng.uniform(0.3, 0.95, n), "min_move": rng.uniform(0.0, 0.01, n),
            "spread": 0.01, "commission_fixed": 1.0, "stake_fraction": 0.25, "cash": 10_000.0}
    p = param_sets(sets)
    evaluate(grid, p)  # warm-up (sparse tables)
    t = time.perf_counter()
    res = evaluate(grid, p)
    t_vec = time.perf_counter() - t
    vec_rate = n / t_vec
    rows = [{k: (v[i] if isinstance(v, np.ndarray) else v) for k, v in sets.items()} for i in range(args.broker_sets)]
    t = time.perf_counter()
    worst = 0.0
    for i, row in enumerate(rows):
        ref = run_broker(bars, IntradayMomentum, row)
        worst = max(worst, abs(ref["final_value"] - res.final_cash[i]))
    t_brk = time.perf_counter() - t
    brk_rate = len(rows) / t_brk
    print(f"evaluator: {n} sets in {t_vec:.3f} s = {vec_rate:,.0f} sets/s (target >= 1,000)")
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
        print("  note: synthetic intraday bars (real daily NASDAQ OHLC); figures illustrate speed, not an edge")


if __name__ == "__main__":
    main()
