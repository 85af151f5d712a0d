"""A 1,000-trial momentum sweep end to end (search, significance, report): today's path beside the new one.

``mltrade optimize strategy --strategy momentum --trials 1000`` on one year of
the sample, in this process, run by ``mltrade.sweep.study.optimize``, in
interleaved rounds (today, now, now, today, ...: load that changes during the
run falls on both paths alike):

* today: the worker's in-memory study asks with Optuna's ``TPESampler``
  (multivariate, constant liar), which fits its two Parzen estimators again
  for every trial asked (the path of ``main`` before this benchmark);
* now: ``BatchTPESampler`` (:mod:`mltrade.sweep.batch_sampler`) fits them once
  per batch and draws the batch's proposals from that fit.

Both search the same space with the same seed, score the same number of
trials on the same folds, confirm, test and write the same files; they
propose different trials, so their best trials differ: each run prints its
best value, pruned count, SPA p-value and deflated Sharpe (the search's
quality beside its speed). Prints wall and CPU seconds of each run and of its
phases, the ratio today / now of each round and their spread, the load
average and the cores. With ``--jobs 2`` a last run of the new path uses two
worker processes (its wall time is the figure for 2 cores on an idle machine).
Wall times on a shared machine depend on the load printed beside them: the
CPU seconds are the steadier figure.

``--seeds N`` also runs both paths with seeds 1..N and prints each one's best validation value and
held-out test return: the search's quality beside its speed.

Run: python benchmarks/bench_sweep_loop.py [--trials 1000] [--year 2017] [--rounds 2] [--seeds 4] [--jobs 2]
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


def one_sweep(label: str, trials: int, year: int, jobs: int, today: bool, seed: int = 42,
              quiet: bool = False) -> dict:
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
                              end=f"{year}-12-31", out=tmp, progress=False, seed=seed)
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
    if quiet:
        return {"wall": wall, "cpu": cpu + child, "summary": summary, "files": files}
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


def quality(args) -> None:
    """Best validation value and held-out test return of both paths over several sampler seeds."""
    print(f"search quality over seeds 1..{args.seeds} (best mean validation log growth; held-out total return "
          "of the best trial through the broker):")
    wins = 0
    for seed in range(1, args.seeds + 1):
        got = {today: one_sweep("", args.trials, args.year, 1, today=today, seed=seed, quiet=True)["summary"]
               for today in (True, False)}
        a, b = got[True], got[False]
        wins += b["best_value"] >= a["best_value"]
        print(f"    seed {seed}: today {a['best_value']:.4f} (test {a['test_best']['total_return']:+.2%}), "
              f"now {b['best_value']:.4f} (test {b['test_best']['total_return']:+.2%})")
    print(f"    the new path's best is at least today's in {wins} of {args.seeds} seeds")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--year", type=int, default=2017)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of today's and the new path")
    ap.add_argument("--jobs", type=int, default=0, help="also run the new path with this many workers (0: skip)")
    ap.add_argument("--seeds", type=int, default=0,
                    help="also compare the search's quality: both paths with [sweep] seed 1..N (0: skip)")
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
        if got[True]["files"] != got[False]["files"]:
            raise SystemExit("the two paths wrote different files")
        walls.append(got[True]["wall"] / got[False]["wall"])
        cpus.append(got[True]["cpu"] / got[False]["cpu"])
        print(f"round {r + 1}: today / now {walls[-1]:.2f}x wall, {cpus[-1]:.2f}x CPU")
    print(f"today / now: wall {spread(walls)}; CPU {spread(cpus)}")
    for today in (True, False):
        xs = runs[today]
        print(f"{'today' if today else 'now  '}: wall {statistics.median(x['wall'] for x in xs):.1f} s, CPU "
              f"{statistics.median(x['cpu'] for x in xs):.1f} s (median of {len(xs)}); best value "
              f"{statistics.median(x['summary']['best_value'] for x in xs):.4f}")
    if args.seeds:
        quality(args)
    if args.jobs > 1:
        one_sweep(f"now, {args.jobs} workers", args.trials, args.year, args.jobs, today=False)
    print("target: <= 15 s end to end on 2 cores")


if __name__ == "__main__":
    main()
