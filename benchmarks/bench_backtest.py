"""The default `mltrade backtest` (momentum + three baselines, 2014-2018, report written): wall time of the
backtrader baselines (the path before) vs the vectorised baselines (the sweep engine for always-long and
random direction, buy-and-hold in closed form), in one process, and whether every figure agrees to the cent.

Prints each phase's seconds, the total of each path and their ratio (target: the vectorised path at most
half the wall time). Run: nice python benchmarks/bench_backtest.py [--start 2014-01-01 --end 2018-12-31]
"""
from __future__ import annotations

import argparse
import tempfile
import time


def timed_run(engine: str, start: str, end: str, out: str) -> tuple[float, dict, dict]:
    from mltrade import backtest as B
    from mltrade.config import load_config

    cfg = load_config(None, {"backtest": {"start": start, "end": end, "out": out}})
    phases: dict = {}
    original = B.baseline_results

    def timed_baselines(*a, **k):
        t = time.perf_counter()
        r = original(*a, **k)
        phases["baselines"] = time.perf_counter() - t
        return r

    B.baseline_results = timed_baselines
    try:
        t0 = time.perf_counter()
        res = B.run_backtest(cfg, run_name=f"bench-{engine}", engine=engine)
        total = time.perf_counter() - t0
    finally:
        B.baseline_results = original
    phases["rest (data, strategy, significance, report)"] = total - phases["baselines"]
    return total, phases, res.summary


def cents(summary: dict) -> dict:
    """Money figures in cents and counts: what must agree exactly."""
    keys = ("final_value", "fees", "trades", "knockouts", "stops", "wins")
    out = {"strategy": {k: round(summary[k] * 100) if isinstance(summary[k], float) else summary[k]
                        for k in keys}}
    for name, b in summary.get("baselines", {}).items():
        out[name] = {k: round(b[k] * 100) if isinstance(b[k], float) else b[k] for k in keys}
        out[name]["max_drawdown_bp"] = round(b["max_drawdown"] * 1e6)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--start", default="2014-01-01")
    ap.add_argument("--end", default="2018-12-31")
    args = ap.parse_args()
    import os
    import sys

    # the default backtest imports neither TensorFlow nor Keras (checked below): nothing to keep out of the timings
    print(f"default backtest {args.start} .. {args.end} (momentum strategy + buy-and-hold, always-long, "
          f"random direction); device: CPU ({os.cpu_count()} cores; backtests use no accelerator)")
    with tempfile.TemporaryDirectory() as out:
        before, ph_b, s_b = timed_run("backtrader", args.start, args.end, out)
        after, ph_a, s_a = timed_run("auto", args.start, args.end, out)
    for name, total, ph in (("backtrader baselines (before)", before, ph_b),
                            ("vectorised baselines (after)", after, ph_a)):
        parts = ", ".join(f"{k} {v:.1f} s" for k, v in ph.items())
        print(f"{name:32s} {total:7.1f} s   ({parts})")
    print(f"after / before: {after / before:.2f} (target <= 0.50); baselines alone: "
          f"{ph_a['baselines'] / ph_b['baselines']:.3f}")
    heavy = [m for m in ("tensorflow", "keras", "ncps") if m in sys.modules]
    print(f"imported by the default backtest: {', '.join(heavy) if heavy else 'no TensorFlow, Keras or ncps'}")
    same = cents(s_b) == cents(s_a)
    print(f"same figures to the cent: {same}")
    for name, b in s_a.get("baselines", {}).items():
        print(f"  {name:17s} total return {b['total_return']:+.4%}  (backtrader "
              f"{s_b['baselines'][name]['total_return']:+.4%}), max drawdown {b['max_drawdown']:.4%}, "
              f"trades {b['trades']}")
    if not same:
        raise SystemExit("figures differ between the two paths")


if __name__ == "__main__":
    main()
