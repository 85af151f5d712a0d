"""Sweep workers sharing one study: identities, seeds, no parameter set scored twice, dead workers, significance."""
from __future__ import annotations

import collections
import json
import multiprocessing as mp
import os
import re
import signal
import threading
from functools import lru_cache

import numpy as np
import optuna
import pandas as pd
import pytest

from mltrade.calendars import sessions
from mltrade.config import load_config
from mltrade.optuna_storage import WorkerIdentity, rdb_of
from mltrade.sweep import study as st
from mltrade.sweep.coordination import Claims, params_key
from mltrade.sweep.scoring import Scorer
from mltrade.sweep.search import run_trials
from mltrade.sweep.settings import SweepSettings
from mltrade.sweep.significance import significance
from mltrade.sweep.study import create_study, optimize
from mltrade.sweep.trials import run_of, trial_returns, worker_of

START, END = "2019-01-01", "2019-12-31"


def walk_bars(seed: int, start: str = START, end: str = END, drift: float = 0.0, after: int = 12) -> pd.DataFrame:
    """Random-walk 5-minute XNAS bars (no pattern); ``drift`` plants intraday momentum: every bar after
    bar ``after`` moves ``drift`` further in the direction the session took up to that bar."""
    rng = np.random.default_rng(seed)
    frames, price = [], 7000.0
    for _, (op, cl) in sessions("XNAS", start, end).iterrows():
        idx = pd.date_range(op, cl, freq="5min", inclusive="left").tz_convert("America/New_York")
        steps = rng.normal(0.0, 0.0012, len(idx))
        if drift and len(idx) > after + 1:
            steps[after + 1:] += drift * np.sign(steps[:after + 1].sum())
        close = price * np.exp(np.cumsum(steps))
        open_ = np.r_[price, close[:-1]]
        wig = np.abs(rng.normal(0.0, 0.0006, (2, len(idx))))
        frames.append(pd.DataFrame({"open": open_, "high": np.maximum(open_, close) * (1 + wig[0]),
                                    "low": np.minimum(open_, close) * (1 - wig[1]), "close": close,
                                    "volume": 1000.0}, index=idx))
        price = close[-1]
    return pd.concat(frames)


@lru_cache(maxsize=4)
def _bars(seed: int, drift: float = 0.0, end: str = END) -> pd.DataFrame:
    return walk_bars(seed, end=end, drift=drift)


@lru_cache(maxsize=1)
def _cfg() -> dict:
    return load_config(None, {"backtest": {"baselines": False}})


def _settings(tmp_path, **kw) -> SweepSettings:
    base = dict(strategy="momentum", start=START, end=END, folds=2, test_frac=0.2, batch=20, out=str(tmp_path),
                progress=False, seed=42, study="s")
    base.update(kw)
    return SweepSettings(**base)


# --------------------------------------------------------------------------- identities and duplicates
def _concurrent_worker(out: str, end: str, n: int, barrier) -> None:
    settings = _settings(out, end=end)
    bars = _bars(1, end=end)
    scorer = Scorer(_cfg(), settings, bars)
    study = create_study(settings)
    barrier.wait(timeout=120)           # both workers start their first batch on an empty study together
    run_trials(scorer, study, n, settings.batch, progress=False)


@pytest.mark.slow
def test_two_workers_started_together_never_score_the_same_parameters(tmp_path):
    end = "2019-06-28"
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_concurrent_worker, args=(str(tmp_path), end, 40, barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    s = _settings(tmp_path, end=end)
    study = optuna.load_study(study_name=s.study_name(), storage=s.storage_url())
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 80
    keys = [params_key(t.params) for t in trials]
    assert len(set(keys)) == 80, "a parameter set was scored twice"
    per_worker = collections.Counter(worker_of(t) for t in trials)
    assert len(per_worker) == 2 and set(per_worker.values()) == {40}
    for name in per_worker:
        assert re.fullmatch(r"[A-Za-z0-9._-]+-\d+-[0-9a-f]{6}", name), name
    # each took its own slot (and so its own sampler seed): their first draws differ
    assert sorted(Claims(rdb_of(study), study._study_id).workers()) == sorted(per_worker)
    first = {w: [params_key(t.params) for t in trials if worker_of(t) == w][:20] for w in per_worker}
    a, b = first.values()
    assert not set(a) & set(b)


def test_claims_are_atomic_across_racing_workers(tmp_path):
    s = _settings(tmp_path, study="race")
    study = create_study(s)
    keys = [f"params:{i:040x}" for i in range(300)]
    held = {}

    def claim(name: str) -> None:
        c = Claims(rdb_of(study), study._study_id)
        held[name] = set()
        for i in range(0, len(keys), 50):
            held[name] |= c.claim(keys[i:i + 50][::-1] if name == "b" else keys[i:i + 50], name)

    threads = [threading.Thread(target=claim, args=(n,)) for n in "abc"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set().union(*held.values()) == set(keys)
    assert sum(len(v) for v in held.values()) == len(keys)     # each key held by exactly one worker
    c = Claims(rdb_of(study), study._study_id)
    assert [c.register(n) for n in ("w0", "w1", "w2")] == [0, 1, 2]
    assert c.workers() == ["w0", "w1", "w2"]


def test_a_parameter_set_is_never_scored_twice_and_an_exhausted_space_stops(tmp_path, caplog):
    s = _settings(tmp_path, end="2019-04-30", study="tiny")
    scorer = Scorer(_cfg(), s, _bars(1, end="2019-04-30"))
    scorer.space = {"decision_bar": (10, 14, 1)}            # five parameter sets in all
    study = create_study(s)
    calls = []
    real = scorer.vector_fold

    def counted(params, fold, returns=False):
        calls.append([p["decision_bar"] for p in params])
        return real(params, fold, returns)

    scorer.vector_fold = counted
    with caplog.at_level("WARNING"):
        ran = run_trials(scorer, study, 30, 10, progress=False)
        again = run_trials(scorer, study, 10, 10, progress=False)   # a second run finds nothing new either
    assert ran == 5 and again == 0
    fold0 = [b for call in calls[::2] for b in call]         # each batch scores fold 0, then fold 1
    assert sorted(fold0) == [10, 11, 12, 13, 14]               # each set scored once
    assert "search space looks exhausted" in caplog.text
    assert len(study.get_trials(deepcopy=False)) == 5


def test_one_worker_alone_is_reproducible_for_a_seed(tmp_path):
    runs = []
    for d in ("a", "b"):
        s = _settings(tmp_path / d, end="2019-04-30")
        study = create_study(s)
        run_trials(Scorer(_cfg(), s, _bars(1, end="2019-04-30")), study, 30, 15, progress=False)
        run_trials(Scorer(_cfg(), s, _bars(1, end="2019-04-30")), study, 15, 15, progress=False)  # resumed
        runs.append([(t.params, t.value) for t in study.get_trials(deepcopy=False)])
    assert runs[0] == runs[1]


# --------------------------------------------------------------------------- counts and dead workers
@pytest.mark.slow
def test_new_trials_count_only_this_run_while_another_worker_adds_trials(tmp_path):
    s = _settings(tmp_path, end="2019-04-30", batch=10, study="count")
    bars = _bars(1, end="2019-04-30")
    other = {"done": False}
    real = Scorer.vector_fold

    def fold(self, params, f, returns=False):
        if not other["done"]:      # another worker on the same study finishes 15 trials meanwhile
            other["done"] = True
            run_trials(Scorer(_cfg(), s, bars), create_study(s), 15, 15, progress=False,
                       worker=WorkerIdentity("otherhost", 4242, "abcdef"))
        return real(self, params, f, returns)

    Scorer.vector_fold = fold
    try:
        summary = optimize(_cfg(), SweepSettings(**{**s.__dict__, "trials": 20}), bars)
    finally:
        Scorer.vector_fold = real
    assert summary["trials_total"] == 35
    assert summary["trials_new"] == 20
    assert [w["trials"] for w in summary["workers"]] == [20]
    assert summary["workers"][0]["worker"] != "otherhost-4242-abcdef"


def _dying_worker(cfg, settings, n_trials, token, run, bars) -> None:
    """A --jobs worker that is killed (SIGKILL) while scoring its second batch."""
    from mltrade.sweep import study as mod

    real, calls = mod.Scorer.vector_fold, []

    def fold(self, *a, **kw):
        calls.append(1)
        if len(calls) == 3:        # batch 1 scored two folds; die inside batch 2
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, *a, **kw)

    mod.Scorer.vector_fold = fold
    mod._worker(cfg, settings, n_trials, token, run, bars)


@pytest.mark.slow
def test_a_dead_jobs_worker_loses_only_its_batch_and_the_report_names_it(tmp_path, monkeypatch, capsys):
    from mltrade.cli import main

    monkeypatch.setattr(st, "_worker", _dying_worker)
    (tmp_path / "c.toml").write_text("[backtest]\nbaselines = false\n")
    rc = main(["optimize", "strategy", "--strategy", "momentum", "--trials", "40", "--jobs", "2", "--batch", "10",
               "--start", "2016-01-01", "--end", "2016-05-31", "--folds", "2", "--out", str(tmp_path), "--quiet",
               "--study", "dead", "--config", str(tmp_path / "c.toml")])
    assert rc == 0
    captured = capsys.readouterr()
    summary = json.loads((tmp_path / "dead" / "sweep.json").read_text())
    assert len(summary["failed_workers"]) == 1
    dead = summary["failed_workers"][0]
    assert dead["exitcode"] == -signal.SIGKILL
    assert f"warning: worker {dead['worker']} died (exit code -9)" in captured.err
    assert "best trial" in captured.out and "held-out test" in captured.out
    rows = {w["worker"]: w for w in summary["workers"]}
    assert rows[dead["worker"]]["status"] == f"died (exit code {-signal.SIGKILL})"
    assert rows[dead["worker"]]["trials"] == 10           # its first batch stands, the one in flight is lost
    alive = [w for w in summary["workers"] if w["worker"] != dead["worker"]]
    assert alive[0]["trials"] == 20 and alive[0]["status"] == "finished"
    assert summary["trials_new"] == summary["trials_total"] == 30
    html = (tmp_path / "dead" / "report.html").read_text()
    assert dead["worker"] in html and "died (exit code -9)" in html


# --------------------------------------------------------------------------- significance
def _search(tmp_path, bars, name: str, n: int = 150):
    s = _settings(tmp_path, study=name, batch=50)
    scorer = Scorer(_cfg(), s, bars)
    study = create_study(s)
    run_trials(scorer, study, n, s.batch, progress=False)
    trials = study.get_trials(deepcopy=False)
    best = max((t for t in trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.value)
    return significance(trials, best, sum(b - a for a, b in scorer.layout.folds), seed=0, reps=1000), trials


@pytest.mark.slow
def test_significance_null_world_is_luck_and_a_planted_edge_is_not(tmp_path):
    null, trials = _search(tmp_path, _bars(2), "null")
    assert null["trials"] == 150 and null["trials_with_returns"] == 150
    assert all(len(trial_returns(t)) <= null["sessions"] for t in trials)
    assert null["spa_pvalue"] > 0.2
    assert null["deflated_sharpe"] < 0.5
    assert "not distinguishable from luck" in null["words"]
    assert null["pbo"]["pbo"] >= 0.3 and null["pbo"]["trials"] == 150   # a search of luck: a coin flip
    edge, _ = _search(tmp_path, _bars(2, drift=0.00015), "edge")
    assert edge["spa_pvalue"] < 0.05
    assert edge["deflated_sharpe"] > 0.95
    assert "Best of 150 trials: distinguishable from luck at 5%" in edge["words"]
    assert edge["pbo"]["pbo"] < null["pbo"]["pbo"]


def test_trial_returns_are_the_evaluators_session_returns(tmp_path):
    s = _settings(tmp_path, end="2019-04-30", study="ret")
    scorer = Scorer(_cfg(), s, _bars(1, end="2019-04-30"))
    study = create_study(s)
    run_trials(scorer, study, 25, 25, progress=False)
    t = next(t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE)
    want = np.concatenate([scorer.vector_fold([t.params], f, returns=True)[1][0] for f in range(2)])
    np.testing.assert_array_equal(trial_returns(t), want)
    growth = sum(np.log(np.prod(1 + scorer.vector_fold([t.params], f, returns=True)[1][0])) for f in range(2)) / 2
    assert t.value == pytest.approx(growth, abs=1e-9)
    assert run_of(t) and worker_of(t)
    # the broker engine's session returns (equity at each session's last bar) are the same figures
    growth, brk = scorer.broker_fold(t.params, 0, returns=True)
    vec = scorer.vector_fold([t.params], 0, returns=True)[1][0]
    np.testing.assert_allclose(brk, vec, rtol=0, atol=1e-6)


def test_deleting_a_study_deletes_its_claims(tmp_path):
    """A study deleted and created again under the same name (and, in SQLite, the same id) starts clean."""
    s = _settings(tmp_path, end="2019-04-30", study="again")
    scorer = Scorer(_cfg(), s, _bars(1, end="2019-04-30"))
    scorer.space = {"decision_bar": (10, 12, 1)}
    assert run_trials(scorer, create_study(s), 10, 10, progress=False) == 3
    optuna.delete_study(study_name="again", storage=s.storage_url())
    study = create_study(s)
    assert Claims(rdb_of(study), study._study_id).workers() == []
    assert run_trials(scorer, study, 10, 10, progress=False) == 3
