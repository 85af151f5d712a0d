"""A 1,000-trial momentum sweep end to end (search, significance, report): today's path beside the new one.

``mltrade optimize strategy --strategy momentum --trials 1000`` on one year of
the sample, in this process, run by ``mltrade.sweep.study.optimize``, in
interleaved rounds (today, now, now, today, ...: load that changes during the
run falls on both paths alike):

* today: the worker's in-memory study asks with Optuna's ``TPESampler``
  (multivariate, constant liar), which recomputes every trial's parameters,
  the good/other split and both Parzen estimators at every ask (the path of
  ``main`` before this benchmark);
* now: ``BatchTPESampler`` (:mod:`mltrade.sweep.batch_sampler`) keeps what a
  batch does not change and builds only the other trials' estimator per ask.

Both must propose the same trials and so choose the same best trial with the
same value, pruning, SPA p-value and deflated Sharpe, and write the same files
(checked every round). Prints wall and CPU seconds of each run and of its
phases, the ratio today / now of each round and their spread, the load
average and the cores. With ``--jobs 2`` a last run of the new path uses two
worker processes (another draw of trials). Wall times on a shared machine
depend on the load printed beside them: the CPU seconds are the steadier figure.

Run: python benchmarks/bench_sweep_loop.py [--trials 1000] [--year 2017] [--rounds 2] [--jobs 2]
"""
from __future__ import annotations

import argparse
import collections
import functools
import os
import resource
import statistics
import tempfile
import time


class Phases:
    """Wall and CPU seconds spent in wrapped functions, per label."""

    def __init__(self) -> None:
        self.acc = collections.defaultdict(lambda: [0.0, 0.0, 0])
        self._undo = []

    def wrap(self, owner, name: str, label: str) -> None:
        f = getattr(owner, name)

        @functools.wraps(f)
        def timed(*a, **k):
            t, c = time.perf_counter(), time.process_time()
            try:
                return f(*a, **k)
            finally:
                row = self.acc[label]
                row[0] += time.perf_counter() - t
                row[1] += time.process_time() - c
                row[2] += 1
        setattr(owner, name, timed)
        self._undo.append((owner, name, f))

    def restore(self) -> None:
        for owner, name, f in reversed(self._undo):
            setattr(owner, name, f)
        self._undo.clear()

    def lines(self):
        for label, (w, c, n) in sorted(self.acc.items(), key=lambda kv: -kv[1][1]):
            yield f"    {label:34s} {w:7.2f} s wall {c:7.2f} s CPU  ({n} calls)"


def today_local_study(seed: int):
    """The in-memory study as ``main`` built it: ``TPESampler`` fitting again for every trial asked."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=50, multivariate=True, constant_liar=True)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=20, n_warmup_steps=0)
    return optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)


def one_sweep(label: str, trials: int, year: int, jobs: int, today: bool) -> dict:
    import optuna

    import mltrade.report
    import mltrade.sweep.finish as fin
    import mltrade.sweep.outputs as outs
    import mltrade.sweep.search as se
    from mltrade.config import load_config
    from mltrade.sweep.scoring import Scorer
    from mltrade.sweep.settings import SweepSettings
    from mltrade.sweep.study import optimize

    ph = Phases()
    if today:
        ph.wrap(se, "local_study", "in-memory study")
        se.local_study, wrapped = today_local_study, se.local_study
    ph.wrap(se, "suggest", "sampling (in-memory study)")
    ph.wrap(se, "add_finished_trials", "storage writes (one per batch)")
    ph.wrap(se.Mirror, "sync", "storage reads (mirror the study)")
    ph.wrap(se, "tell", "tell the in-memory study")
    ph.wrap(Scorer, "vector_fold", "scoring (vectorised kernel)")
    ph.wrap(optuna.trial.Trial, "should_prune", "pruning decisions")
    ph.wrap(Scorer, "broker_run", "broker runs (confirm, test)")
    ph.wrap(Scorer, "baselines", "baselines (test range)")
    ph.wrap(fin, "significance", "significance (SPA, DSR, PBO)")
    ph.wrap(fin, "importance", "parameter importance (fANOVA)")
    ph.wrap(outs, "write_trials", "trials.csv")
    ph.wrap(mltrade.report, "write_report", "report (HTML, figures)")
    ph.wrap(Scorer, "__init__", "bars and session grid")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config(None)
            s = SweepSettings(strategy="momentum", trials=trials, jobs=jobs, start=f"{year}-01-01",
                              end=f"{year}-12-31", out=tmp, progress=False)
            kids = resource.getrusage(resource.RUSAGE_CHILDREN)
            t, c = time.perf_counter(), time.process_time()
            summary = optimize(cfg, s)
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            child = (after.ru_utime + after.ru_stime) - (kids.ru_utime + kids.ru_stime)
            files = sorted(p.name for p in (s.out_dir()).iterdir())
    finally:
        if today:
            se.local_study = wrapped
        ph.restore()
    print(f"{label}: {trials} trials, jobs {jobs}: {wall:.1f} s wall, {cpu:.1f} s CPU of this process "
          f"{f'+ {child:.1f} s CPU of its worker processes ' if child > 0 else ''}"
          f"(search {summary['search_seconds']:.1f} s wall; load average now {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores)")
    for line in ph.lines():
        print(line)
    print(f"    best trial {summary['best_trial']} value {summary['best_value']:.6f} {summary['best_params']}; "
          f"{summary['trials_complete']} complete, {summary['trials_pruned']} pruned; SPA p {summary['spa_pvalue']}, "
          f"deflated Sharpe {summary['deflated_sharpe']}; files {', '.join(files)}")
    return {"wall": wall, "cpu": cpu + child, "summary": summary, "files": files}


def spread(xs) -> str:
    return f"median {statistics.median(xs):.2f}x (min {min(xs):.2f}, max {max(xs):.2f}, {len(xs)} rounds)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--year", type=int, default=2017)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of today's and the new path")
    ap.add_argument("--jobs", type=int, default=0, help="also run the new path with this many workers (0: skip)")
    args = ap.parse_args()
    t, c = time.perf_counter(), time.process_time()
    import mltrade.sweep.study  # noqa: F401  (imports are counted once, here)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"imports: {time.perf_counter() - t:.1f} s wall, {time.process_time() - c:.1f} s CPU; "
          f"optuna {optuna.__version__}; device: CPU ({os.cpu_count()} cores; the sweep uses no accelerator)")
    # a first, short sweep warms what a first run pays once (sample cache, calendars, lazy imports)
    one_sweep("warm-up", 60, args.year, 1, today=False)
    walls, cpus, runs = [], [], collections.defaultdict(list)
    for r in range(args.rounds):
        order = (True, False) if r % 2 == 0 else (False, True)
        got = {}
        for today in order:
            label = f"round {r + 1}, {'today' if today else 'now'}"
            got[today] = one_sweep(label, args.trials, args.year, 1, today=today)
            runs[today].append(got[today])
        a, b = got[True]["summary"], got[False]["summary"]
        keys = ("best_trial", "best_value", "best_params", "trials_pruned", "spa_pvalue", "deflated_sharpe", "pbo")
        if got[True]["files"] != got[False]["files"] or any(a[k] != b[k] for k in keys):
            raise SystemExit("the two paths chose or wrote differently")
        walls.append(got[True]["wall"] / got[False]["wall"])
        cpus.append(got[True]["cpu"] / got[False]["cpu"])
        print(f"round {r + 1}: today / now {walls[-1]:.2f}x wall, {cpus[-1]:.2f}x CPU; same best trial, value, "
              f"pruning, significance and files: True")
    print(f"today / now: wall {spread(walls)}; CPU {spread(cpus)}")
    for today in (True, False):
        xs = runs[today]
        print(f"{'today' if today else 'now  '}: wall {statistics.median(x['wall'] for x in xs):.1f} s, CPU "
              f"{statistics.median(x['cpu'] for x in xs):.1f} s (median of {len(xs)})")
    if args.jobs > 1:
        one_sweep(f"now, {args.jobs} workers", args.trials, args.year, args.jobs, today=False)
    print("target: <= 15 s end to end on 2 cores")


if __name__ == "__main__":
    main()
