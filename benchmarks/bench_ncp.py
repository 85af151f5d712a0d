"""NCP/LTC strategy benchmark: training time per epoch (LTC vs CfC), batch vs per-session inference,
and a one-year 5-minute backtest of NCPStrategy end to end with the model loaded (target <= 20 s).

Prints each figure beside its baseline in the same run (ratios).
Run: python benchmarks/bench_ncp.py [--samples 2000] [--epochs 2] [--year 2018]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def epoch_times(cell: str, n: int, n_daily: int, epochs: int) -> tuple[float, float]:
    """(first epoch incl. tracing, mean of the following epochs) in seconds, batch 64."""
    from mltrade.models.ncp.model import NCPConfig, build_model
    rng = np.random.default_rng(0)
    d = rng.normal(size=(n, n_daily)).astype("float32")
    s = rng.normal(0, 0.01, (n, 17, 6)).astype("float32")
    y = (rng.random(n) > 0.5).astype("float32")
    model = build_model(NCPConfig(n_daily=n_daily, cell=cell, ltc_units=20, ltc_units2=12), d, s)
    t = time.perf_counter()
    model.fit([d, s], y, epochs=1, batch_size=64, verbose=0)
    first = time.perf_counter() - t
    t = time.perf_counter()
    model.fit([d, s], y, epochs=epochs, batch_size=64, verbose=0)
    return first, (time.perf_counter() - t) / epochs


def inference(model, daily: np.ndarray, seq: np.ndarray) -> dict:
    """One batched call vs one call per session (compiled) vs keras ``predict`` per session."""
    from mltrade.models.ncp.model import predict_proba
    predict_proba(model, daily[:2], seq[:2])  # trace once
    t = time.perf_counter()
    pb = predict_proba(model, daily, seq)
    batch = time.perf_counter() - t
    t = time.perf_counter()
    ps = np.array([predict_proba(model, daily[i:i + 1], seq[i:i + 1])[0] for i in range(len(daily))])
    per = time.perf_counter() - t
    k = min(20, len(daily))
    model.predict([daily[:1], seq[:1]], verbose=0)
    t = time.perf_counter()
    for i in range(k):
        model.predict([daily[i:i + 1], seq[i:i + 1]], verbose=0)
    keras_per = (time.perf_counter() - t) / k * len(daily)
    return {"batch": batch, "per_session": per, "keras_predict_per_session": keras_per,
            "max_abs_diff": float(np.abs(pb - ps).max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--year", type=int, default=2018)
    args = ap.parse_args()

    from mltrade.backtest import run_strategy
    from mltrade.config import load_config
    from mltrade.feeds.sample import sample_intraday
    from mltrade.models.ncp.train import (NCPSettings, FoldTrainer, config_from_params, dataset_for,
                                          load_artifact, write_artifact)
    from mltrade.models.ncp.adapt import ATRAdaptation
    from mltrade.strategies.ncp import NCPStrategy
    from mltrade.strategies.reference import IntradayMomentum

    print("== training time per epoch (batch 64, %d samples, 2 stacked layers AutoNCP(20,17)/(12,9))" % args.samples)
    res = {c: epoch_times(c, args.samples, 122, args.epochs) for c in ("ltc", "cfc")}
    for c, (first, per) in res.items():
        print(f"  {c}: first epoch (with tracing) {first:6.2f} s, then {per:6.2f} s/epoch")
    print(f"  CfC / LTC time per epoch: {res['cfc'][1] / res['ltc'][1]:.2f}x")

    print(f"== model for the backtest: CfC trained on the sample before {args.year} (3 epochs)")
    s = NCPSettings(cell="cfc", start=f"{args.year - 2}-01-01", end=f"{args.year - 1}-12-31")
    ds = dataset_for(s)
    trainer = FoldTrainer(config_from_params({}, ds.daily.shape[1], s), epochs=3, batch_size=32, patience=2)
    model = trainer.fit(ds)
    tmp = tempfile.mkdtemp(prefix="bench-ncp-")
    meta = {"settings": s.to_dict(), "adaptation": ATRAdaptation.identity().to_dict(), "metrics": {},
            "config": {"cell": "cfc"}, "feature_names": ds.feature_names}
    write_artifact(model, meta, tmp)

    print(f"== inference over {len(ds)} sessions")
    inf = inference(model, ds.daily, ds.seq)
    print(f"  one batch:                 {inf['batch'] * 1e3:8.1f} ms")
    print(f"  one call per session:      {inf['per_session'] * 1e3:8.1f} ms  ({inf['per_session'] / inf['batch']:.0f}x batch)")
    print(f"  keras predict per session: {inf['keras_predict_per_session'] * 1e3:8.1f} ms  "
          f"({inf['keras_predict_per_session'] / inf['batch']:.0f}x batch, extrapolated from 20 calls)")
    print(f"  max |batch - per-session| probability difference (float32 kernels): {inf['max_abs_diff']:.1e}")

    print(f"== one-year 5-minute backtest ({args.year}), model loaded from disk")
    cfg = load_config()
    bars = sample_intraday(f"{args.year}-01-01", f"{args.year}-12-31")
    t = time.perf_counter()
    mom = run_strategy(bars, IntradayMomentum, {"decision_bar": 17}, cfg)
    t_mom = time.perf_counter() - t
    t = time.perf_counter()
    m2, meta2 = load_artifact(tmp)
    t_load = time.perf_counter() - t
    t = time.perf_counter()
    r = run_strategy(bars, NCPStrategy, {"model": m2, "meta": meta2}, cfg)
    t_ncp = time.perf_counter() - t
    t = time.perf_counter()
    r_live = run_strategy(bars, NCPStrategy, {"model": m2, "meta": meta2, "mode": "live"}, cfg)
    t_live = time.perf_counter() - t
    print(f"  bars: {len(bars)}; NCP trades {len(r.trades)}, momentum trades {len(mom.trades)}")
    print(f"  IntradayMomentum (baseline):   {t_mom:6.2f} s")
    print(f"  NCPStrategy batch, end to end: {t_load + t_ncp:6.2f} s (load {t_load:.2f} s + run {t_ncp:.2f} s) "
          f"= {(t_load + t_ncp) / t_mom:.2f}x momentum; target <= 20 s: "
          f"{'met' if t_load + t_ncp <= 20 else 'NOT met'}")
    print(f"  NCPStrategy live (one prediction per decision): {t_live:6.2f} s = {t_live / t_ncp:.2f}x batch")
    same = len(r.trades) == len(r_live.trades)
    print(f"  batch and live trade counts equal: {same}")


if __name__ == "__main__":
    main()
