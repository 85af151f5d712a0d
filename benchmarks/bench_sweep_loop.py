"""A 1,000-trial momentum sweep end to end (search, significance, report): today's path beside the path before.

``mltrade optimize strategy --strategy momentum --trials 1000`` on one year of
the sample, in this process, run by ``mltrade.sweep.study.optimize`` twice:

* before: every finished trial written by Optuna's ``Study.add_trials`` (one
  trial at a time, ~20 SQL round trips each), as the sweep wrote them before;
* now: each batch written in one transaction (``mltrade.sweep.bulk_trials``).

Both runs use the same seed and must choose the same best trial with the same
value, SPA p-value and deflated Sharpe (checked, printed). Prints wall and CPU
seconds of each run and of its phases (sampling, scoring, storage writes,
broker confirmation, significance, report), the load average and the cores.
With ``--jobs 2`` a third run uses two worker processes (another draw of
trials, so its best trial may differ; its wall time is the figure for 2 cores).
Wall times on a shared machine depend on the load printed beside them: the
CPU seconds of the single-process runs are the steadier figure.

Run: python benchmarks/bench_sweep_loop.py [--trials 1000] [--year 2017] [--jobs 2] [--skip-before]
"""
from __future__ import annotations

import argparse
import collections
import functools
import os
import resource
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


def one_sweep(label: str, trials: int, year: int, jobs: int, before: bool) -> dict:
    import optuna

    import mltrade.report
    import mltrade.sweep.study as st
    from mltrade.config import load_config

    ph = Phases()
    if before:
        ph.wrap(optuna.study.Study, "add_trials", "storage writes (Study.add_trials)")
        original = st.add_finished_trials
        st.add_finished_trials = lambda study, ts: study.add_trials(ts)
    else:
        ph.wrap(st, "add_finished_trials", "storage writes (one per batch)")
    ph.wrap(st, "suggest", "sampling (TPE, in-memory study)")
    ph.wrap(st.Scorer, "vector_fold", "scoring (vectorised evaluator)")
    ph.wrap(optuna.trial.Trial, "should_prune", "pruning decisions")
    ph.wrap(st.Scorer, "broker_run", "broker runs (confirm, test)")
    ph.wrap(st, "significance", "significance (SPA, deflated Sharpe)")
    ph.wrap(mltrade.report, "write_report", "report (HTML, figures)")
    ph.wrap(st.Scorer, "__init__", "bars and session grid")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config(None)
            s = st.SweepSettings(strategy="momentum", trials=trials, jobs=jobs, start=f"{year}-01-01",
                                 end=f"{year}-12-31", out=tmp, progress=False)
            kids = resource.getrusage(resource.RUSAGE_CHILDREN)
            t, c = time.perf_counter(), time.process_time()
            summary = st.optimize(cfg, s)
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            child = (after.ru_utime + after.ru_stime) - (kids.ru_utime + kids.ru_stime)
    finally:
        ph.restore()
        if before:
            st.add_finished_trials = original
    print(f"{label}: {trials} trials, jobs {jobs}: {wall:.1f} s wall, {cpu:.1f} s CPU of this process "
          f"{f'+ {child:.1f} s CPU of its worker processes ' if child > 0 else ''}"
          f"(search {summary['search_seconds']:.1f} s wall; load average now {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores)")
    for line in ph.lines():
        print(line)
    print(f"    best trial {summary['best_trial']} value {summary['best_value']:.6f} {summary['best_params']}; "
          f"{summary['trials_pruned']} pruned; SPA p {summary['spa_pvalue']}, deflated Sharpe "
          f"{summary['deflated_sharpe']}")
    return {"wall": wall, "cpu": cpu, "summary": summary}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--year", type=int, default=2017)
    ap.add_argument("--jobs", type=int, default=0, help="also run with this many worker processes (0: skip)")
    ap.add_argument("--skip-before", action="store_true", help="skip the before path (per-trial writes)")
    args = ap.parse_args()
    t, c = time.perf_counter(), time.process_time()
    import mltrade.sweep.study  # noqa: F401  (imports are counted once, here)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"imports: {time.perf_counter() - t:.1f} s wall, {time.process_time() - c:.1f} s CPU; "
          f"optuna {optuna.__version__}; device: CPU ({os.cpu_count()} cores; the sweep uses no accelerator)")
    # a first, short sweep warms what a first run pays once (sample cache, calendars, lazy imports)
    one_sweep("warm-up", 60, args.year, 1, before=False)
    now = one_sweep("now", args.trials, args.year, 1, before=False)
    if not args.skip_before:
        old = one_sweep("before", args.trials, args.year, 1, before=True)
        a, b = now["summary"], old["summary"]
        keys = ("best_trial", "best_value", "best_params", "trials_pruned", "spa_pvalue", "deflated_sharpe")
        same = all(a[k] == b[k] for k in keys)
        print(f"before / now: {old['wall'] / now['wall']:.2f}x wall, {old['cpu'] / now['cpu']:.2f}x CPU; "
              f"same best trial, value, pruning and significance: {same}")
        if not same:
            raise SystemExit("the two paths chose differently")
    if args.jobs > 1:
        one_sweep(f"now, {args.jobs} workers", args.trials, args.year, args.jobs, before=False)
    print("target: <= 15 s end to end on 2 cores")


if __name__ == "__main__":
    main()
