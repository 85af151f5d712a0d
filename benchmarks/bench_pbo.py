"""PBO (CSCV) of a 1,000-trial momentum sweep, on the sample and on a null world.

Runs the project's strategy sweep (``mltrade.sweep.study``: Optuna TPE, vectorised evaluator,
walk-forward validation folds) over the ``momentum`` strategy's parameter space, then prints the
sweep's SPA p-value, Deflated Sharpe and Probability of Backtest Overfitting from ``sweep.json``.
The null world is a Brownian market (``mltrade.feeds.artefacts.null_world``, constant volatility):
any momentum edge there is luck, so its PBO should be near 0.5.
Run: nice python benchmarks/bench_pbo.py [--trials 1000] [--start 2014-01-01] [--end 2018-12-31]
"""
from __future__ import annotations

import argparse
import tempfile
import time

from mltrade.config import load_config
from mltrade.feeds import artefacts as A
from mltrade.feeds.sample import sample_intraday
from mltrade.sweep.settings import SweepSettings
from mltrade.sweep.study import optimize


def run(bars, name: str, a) -> dict:
    cfg = load_config(None, {"backtest": {"baselines": False}})
    with tempfile.TemporaryDirectory() as tmp:
        s = SweepSettings(strategy="momentum", start=a.start, end=a.end, folds=a.folds, test_frac=0.2,
                          batch=100, out=tmp, progress=False, seed=42, study=name, trials=a.trials)
        t0 = time.perf_counter()
        out = optimize(cfg, s, bars)
        out["_seconds"] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--start", default="2014-01-01")
    ap.add_argument("--end", default="2018-12-31")
    a = ap.parse_args()
    worlds = {"sample (real daily, synthetic 5-minute)": sample_intraday(a.start, a.end)}
    _, brown = A.null_world(start=a.start, end=a.end, seed=1, vol="constant")
    worlds["null world (Brownian, constant vol)"] = brown
    print(f"momentum sweep, {a.trials} trials, {a.folds} validation folds, {a.start}..{a.end}")
    print(f"{'world':42s} {'trials':>7s} {'sessions':>8s} {'SPA p':>7s} {'DSR':>6s} {'PBO':>6s} "
          f"{'logit median':>12s} {'P(OOS loss)':>11s} {'time':>7s}")
    for i, (name, bars) in enumerate(worlds.items()):
        out = run(bars, f"pbo{i}", a)
        sig = out["significance"]
        p = sig.get("pbo") or {}
        print(f"{name:42s} {sig['trials']:7d} {sig['sessions']:8d} {sig['spa_pvalue']:7.3f} "
              f"{sig['deflated_sharpe']:6.3f} {p.get('pbo', float('nan')):6.3f} "
              f"{p.get('logit_quantiles', {}).get('50', float('nan')):12.2f} "
              f"{p.get('prob_oos_loss', float('nan')):11.2f} {out['_seconds']:6.0f}s", flush=True)
        print(f"  {sig['words']}")


if __name__ == "__main__":
    main()
