"""NCP/LTC benchmark: the Optuna search (today's path vs the new one, side by side), training time per
epoch (LTC vs CfC), batch vs per-session inference, and a one-year 5-minute backtest of NCPStrategy end to
end with the model loaded (target <= 20 s).

Prints each figure beside its baseline in the same run (ratios) and the device TensorFlow ran on.
Search legs run in fresh processes (TensorFlow's thread pools are fixed at start), same settings, same
search space and objective; "old" is the previous path (Keras ``fit`` with an EarlyStopping callback per
fold, the model's default thread pools, one process, pruning from the 5th trial), kept here as the
baseline; "new" is ``mltrade.models.ncp.search.optimize`` (compiled loop, folds cut once per study,
pruning after the first fold, one worker process per core with one thread each, dataset cache).
Run: python benchmarks/bench_ncp.py [--trials 20] [--max-epochs 20] [--skip-search] [--search-only]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
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


# --------------------------------------------------------------------------
# the search: today's (previous) path, kept here as the baseline
# --------------------------------------------------------------------------
def _legacy_objective(s, ds, folds, stats):
    """The previous trial objective: a Keras ``fit`` per fold with EarlyStopping (restore best weights)."""
    import keras
    import numpy as np
    from mltrade.models.ncp.fit import DEFAULT_PARAMS, config_from_params
    from mltrade.models.ncp.model import build_model, predict_proba, set_input_stats
    from mltrade.models.ncp.scoring import directions, performance
    from mltrade.models.ncp.search import suggest_params
    import optuna

    def objective(trial):
        params = suggest_params(trial, s)
        cfg = config_from_params(params, ds.daily.shape[1], s, trial.number)
        model = build_model(cfg)
        model.optimizer.build(model.trainable_variables)
        w0 = model.get_weights()
        opt0 = [v.numpy() for v in model.optimizer.variables]
        values = []
        for k, f in enumerate(folds):
            keras.utils.set_random_seed(cfg.seed)
            model.set_weights(w0)
            for v, x in zip(model.optimizer.variables, opt0):
                v.assign(x)
            tr, va, sc = ds.subset(f.train), ds.subset(f.val), ds.subset(f.test)
            set_input_stats(model, tr.daily, tr.seq)
            t0 = time.perf_counter()
            h = model.fit([tr.daily, tr.seq], tr.label, validation_data=([va.daily, va.seq], va.label),
                          epochs=int(params.get("epochs", DEFAULT_PARAMS["epochs"])),
                          batch_size=int(params.get("batch_size", 32)), shuffle=True, verbose=0,
                          callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=s.patience,
                                                                   restore_best_weights=True)])
            stats["epochs"] += len(h.history["loss"])
            stats["train_s"] += time.perf_counter() - t0
            d = directions(predict_proba(model, sc.daily, sc.seq), s.threshold)
            values.append(performance(d, sc, s.objective)["objective"])
            trial.report(float(np.mean(values)), k)
            if trial.should_prune():
                stats["pruned"] += 1
                raise optuna.TrialPruned()
        return float(np.mean(values))
    return objective


def search_leg(leg: str, trials: int, max_epochs: int, state: str) -> dict:
    """Run one leg of the search comparison in this process; returns its figures."""
    import optuna
    from mltrade.models.ncp.data import dataset_for, split
    from mltrade.models.ncp.fit import configure_tensorflow
    from mltrade.models.ncp.search import optimize
    from mltrade.models.ncp.settings import NCPSettings
    s = NCPSettings(max_epochs=max_epochs, state_dir=state, study=f"bench-{leg}")
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    if leg == "old":
        from mltrade.models.ncp.fit import device_name
        device = device_name()
        ds = dataset_for(s)
        folds, _ = split(ds, s)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        stats = {"epochs": 0, "train_s": 0.0, "pruned": 0}
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(
            seed=0, n_startup_trials=min(8, max(2, trials // 3))),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0))
        study.optimize(_legacy_objective(s, ds, folds, stats), n_trials=trials)
        out = {"epochs": stats["epochs"], "pruned": stats["pruned"]}
    else:
        device = configure_tensorflow(s.threads)
        ds = None
        lines = []
        import re
        from mltrade.models.ncp.data import cached_dataset
        from mltrade.models.ncp.search import _jobs, run_trials
        jobs = _jobs(s)
        if jobs == 1:
            ds = cached_dataset(s)
            run_trials(s, s.storage_url(), trials, ds, lines.append, seed=0, worker="bench")
        else:
            optimize_search_only(s, trials, jobs, lines)
        ep = [int(m.group(1)) for m in (re.search(r"(\d+) epochs,", x) for x in lines) if m]
        out = {"epochs": sum(ep), "pruned": sum("pruned" in x for x in lines), "jobs": jobs}
    out.update(leg=leg, trials=trials, seconds=time.perf_counter() - t0, device=device,
               load=[load0, os.getloadavg()[0]])
    return out


def optimize_search_only(s, trials: int, jobs: int, lines: list) -> None:
    """The new path's worker processes (as ``optimize`` starts them), without the final model."""
    import multiprocessing as mp
    from mltrade.models.ncp.data import cached_dataset, dataset_key
    from mltrade.models.ncp.search import _study, _worker_main
    cached_dataset(s)
    _study(s, s.storage_url(), 0, trials)
    cache = os.path.join(s.state_dir, "cache", f"ncp-dataset-{dataset_key(s)}.npz")
    share = [trials // jobs + (1 if i < trials % jobs else 0) for i in range(jobs)]
    ctx = mp.get_context("spawn")
    log = os.path.join(s.state_dir, "workers.log")
    saved = os.dup(1)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)  # workers print their trial lines to our stdout: capture them in a file
    try:
        procs = [ctx.Process(target=_worker_main, args=(s.to_dict(), s.storage_url(), k, cache, None))
                 for k in share if k]
        for p in procs:
            p.start()
    finally:
        os.dup2(saved, 1)
        os.close(fd)
    for p in procs:
        p.join()
    with open(log) as fh:
        for line in fh:
            lines.append(line)
            print("    " + line.rstrip(), file=sys.stderr)


def compare_search(trials: int, max_epochs: int) -> None:
    print(f"== NCP search, {trials} trials each, max_epochs {max_epochs}, default [ncp] settings "
          f"(LTC, 2016-2018 sample, 2 folds): old path vs new path, fresh processes, same machine")
    res = {}
    for leg in ("old", "new"):
        with tempfile.TemporaryDirectory(prefix=f"bench-ncp-{leg}-") as state:
            cmd = [sys.executable, os.path.abspath(__file__), "--search-leg", leg, "--trials", str(trials),
                   "--max-epochs", str(max_epochs), "--state", state]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"search leg {leg} failed:\n{out.stderr[-3000:]}")
            res[leg] = json.loads(out.stdout.strip().splitlines()[-1])
        r = res[leg]
        print(f"  {leg}: {r['seconds']:7.1f} s for {r['trials']} trials "
              f"({r['seconds'] / r['trials']:.1f} s/trial), "
              f"{r['epochs']} epochs = {r['epochs'] / r['seconds']:.2f} epochs/s wall, {r['pruned']} pruned, "
              f"device {r['device']}" + (f", {r['jobs']} worker processes" if "jobs" in r else "")
              + (f"; machine load {r['load'][0]:.1f} -> {r['load'][1]:.1f}" if "load" in r else ""))
    o, n = res["old"], res["new"]
    print(f"  new path: {o['seconds'] / n['seconds']:.2f}x faster for {trials} trials "
          f"(epochs/s {n['epochs'] / n['seconds'] / max(o['epochs'] / o['seconds'], 1e-9):.2f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--year", type=int, default=2018)
    ap.add_argument("--trials", type=int, default=20, help="search trials per leg")
    ap.add_argument("--max-epochs", type=int, default=20, help="[ncp] max_epochs of the search legs")
    ap.add_argument("--skip-search", action="store_true", help="skip the search comparison")
    ap.add_argument("--search-only", action="store_true", help="only the search comparison")
    ap.add_argument("--search-leg", choices=["old", "new"], help=argparse.SUPPRESS)
    ap.add_argument("--state", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.search_leg:
        print(json.dumps(search_leg(args.search_leg, args.trials, args.max_epochs, args.state)))
        return
    from mltrade.models.ncp.fit import device_name
    print(f"device: {device_name()}")
    if not args.skip_search:
        compare_search(args.trials, args.max_epochs)
    if args.search_only:
        return

    from mltrade.backtest import run_strategy
    from mltrade.config import load_config
    from mltrade.feeds.sample import sample_intraday
    from mltrade.models.ncp.adapt import ATRAdaptation
    from mltrade.models.ncp.artifact import load_artifact, write_artifact
    from mltrade.models.ncp.data import dataset_for
    from mltrade.models.ncp.fit import FoldTrainer, config_from_params
    from mltrade.models.ncp.settings import NCPSettings
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
