"""Two sweep workers share one Optuna study in a real PostgreSQL server (started by scripts/start_postgres.sh)."""
from __future__ import annotations

import collections
import os
import subprocess
import sys
import uuid

import optuna
import pytest

from mltrade.sweep.coordination import params_key
from mltrade.sweep.trials import worker_of

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _trials(url: str, name: str):
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def _check_no_trial_lost_or_duplicated(trials, per_worker: dict) -> None:
    uids = [t.user_attrs["sweep_uid"] for t in trials]
    assert len(uids) == len(set(uids)), "a trial was written twice"
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert collections.Counter(worker_of(t) for t in trials) == per_worker
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials)


def test_two_worker_processes_share_one_postgres_study(pg_url, tmp_path):
    name = f"pgtest-{uuid.uuid4().hex[:8]}"
    common = [sys.executable, "-m", "mltrade.cli", "optimize", "strategy", "--strategy", "momentum",
              "--storage", pg_url, "--study", name, "--trials", "40", "--batch", "10", "--start", "2016-01-01",
              "--end", "2016-04-30", "--folds", "2", "--quiet"]
    env = dict(os.environ, MPLBACKEND="Agg")
    procs = [subprocess.Popen(common + ["--out", str(tmp_path / f"w{i}")], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        assert "best trial" in out
    try:
        trials = _trials(pg_url, name)
        assert len(trials) == 80
        workers = collections.Counter(worker_of(t) for t in trials)
        assert len(workers) == 2 and set(workers.values()) == {40}
        _check_no_trial_lost_or_duplicated(trials, dict(workers))
        # started together on an empty study: own seeds, no parameter set scored twice
        assert len({params_key(t.params) for t in trials}) == 80
    finally:
        optuna.delete_study(study_name=name, storage=pg_url)


def test_jobs_option_runs_worker_processes_on_postgres(pg_url, tmp_path):
    from mltrade.config import load_config
    from mltrade.sweep.settings import SweepSettings
    from mltrade.sweep.study import optimize

    name = f"pgjobs-{uuid.uuid4().hex[:8]}"
    s = SweepSettings(strategy="momentum", trials=50, jobs=2, storage=pg_url, study=name, start="2016-01-01",
                      end="2016-04-30", folds=2, batch=10, out=str(tmp_path), progress=False)
    try:
        summary = optimize(load_config(None), s)
        assert summary["trials_total"] == 50 and summary["storage"].startswith("postgresql")
        names = [w["worker"] for w in summary["workers"]]
        assert len(set(names)) == 2 and [w["trials"] for w in summary["workers"]] == [25, 25]
        trials = _trials(pg_url, name)
        _check_no_trial_lost_or_duplicated(trials, dict.fromkeys(names, 25))
        assert len({params_key(t.params) for t in trials}) == 50
    finally:
        optuna.delete_study(study_name=name, storage=pg_url)
