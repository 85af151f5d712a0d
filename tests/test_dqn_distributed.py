"""DQN ensembles trained across machines: jobs in a shared Optuna study (SQLite here, PostgreSQL under CI),
claimed once, a dead worker's job taken over, and the assembled ensembles equal to a one-machine run."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from mltrade.config import load_config
from mltrade.models.dqn.distributed import DistributedTraining, Job, default_study_name

CONFIG = """[dqn]
start = "2012-01-01"
end = "2013-06-30"
train_days = 200
val_days = 60
test_days = 40
embargo = 2
candidates = 3
agents = 2
steps = 300
episode_length = 100
sessions = ["day"]
"""
KEYS = ["f0-day-c000", "f0-day-c001", "f0-day-c002"]


def _cfg(tmp_path) -> tuple:
    path = tmp_path / "dqn.toml"
    path.write_text(CONFIG)
    return path, dict(load_config(path)["dqn"])


def _cli(cfg_file, *extra: str) -> list:
    return ["train", "dqn", "--config", str(cfg_file), "--quiet", *extra]


def _bundle(registry) -> tuple:
    """Kept specs, Q-values of every kept agent on the whole range, metrics of the registry's model."""
    from mltrade.feeds.sample import load_daily
    from mltrade.models.dqn.observations import build_observations
    from mltrade.models.dqn.bundle import load_bundle
    from mltrade.models.registry import ModelRegistry

    reg = ModelRegistry(registry)
    model = load_bundle(reg.path("dqn"))["day"]
    obs = build_observations(load_daily("2012-01-01", "2013-06-30")).dropna()
    return model.ensemble.specs, model.ensemble.q_values(obs), reg.metrics("dqn")


def _assert_same_result(single: tuple, other: tuple) -> None:
    (specs1, q1, m1), (specs2, q2, m2) = single, other
    assert [s["seed"] for s in specs1] == [s["seed"] for s in specs2]           # the same agents selected
    assert specs1 == specs2
    assert q1.shape == q2.shape and np.array_equal(q1, q2)                       # bit for bit
    f1, f2 = m1["folds"][0], m2["folds"][0]
    assert f1["validation_agent_returns"] == f2["validation_agent_returns"]
    assert f1["test"] == f2["test"] and m1["val_return"] == m2["val_return"]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The one-machine run of the tiny config (the reference)."""
    from mltrade.cli import main

    tmp = tmp_path_factory.mktemp("dqn-single")
    cfg_file, _ = _cfg(tmp)
    assert main(_cli(cfg_file, "--registry", str(tmp / "models"))) == 0
    return _bundle(tmp / "models")


def _running(url: str, name: str) -> list:
    storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}}
                                         if url.startswith("sqlite") else {})
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return []
    return [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]


def test_jobs_are_enqueued_once_claimed_once_and_a_silent_job_is_taken_over(tmp_path):
    from optuna.storages import fail_stale_trials

    _, cfg = _cfg(tmp_path)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    a = DistributedTraining(url, cfg, heartbeat=1, grace=1, log=lambda m: None)
    b = DistributedTraining(url, cfg, heartbeat=1, grace=1, log=lambda m: None)
    assert a.created and not b.created and a.study_name == b.study_name == default_study_name(cfg)
    assert [j.key for j in a.jobs] == KEYS and b.jobs == a.jobs
    assert len(a.trials()) == 3                                       # the second process enqueued nothing
    # the run's name ignores where the model is kept, not what shapes the agents
    assert default_study_name({**cfg, "registry": "elsewhere"}) == a.study_name
    assert default_study_name({**cfg, "steps": 301}) != a.study_name
    with pytest.raises(ValueError, match=r"different \[dqn\] config \(keys \['steps'\]\)"):
        DistributedTraining(url, {**cfg, "steps": 301}, study=a.study_name)
    w = DistributedTraining(url, {**cfg, "steps": 301}, study=a.study_name, check_config=False)
    assert w.cfg["steps"] == 300                                      # a worker trains the study's config
    claims = [a.claim(), b.claim(), a.claim(), b.claim()]
    assert claims[3] is None
    assert sorted(t.number for _, t in claims[:3]) == [0, 1, 2]       # every job claimed exactly once
    assert a.status() == {"jobs": 3, "done": 0, "running": 3, "waiting": 0, "failed": 0, "lost": []}
    with pytest.raises(ValueError, match="3 of 3 jobs are not done yet"):
        a.assemble()
    # nobody records heartbeats for these claims: after the grace period they are stale, failed, re-enqueued
    time.sleep(2.5)
    fail_stale_trials(b.study)
    st = b.status()
    assert st["failed"] == 3 and st["waiting"] == 3 and st["running"] == 0
    retried = [t for t in b.trials((TrialState.WAITING,))]
    assert sorted(t.user_attrs["key"] for t in retried) == KEYS
    assert sorted(t.user_attrs["retry_of"] for t in retried) == [0, 1, 2]
    assert Job.from_dict(retried[0].user_attrs["job"]).key == retried[0].user_attrs["key"]


def test_storage_options_need_storage(tmp_path, capsys):
    from mltrade.cli import main

    cfg_file, _ = _cfg(tmp_path)
    assert main(_cli(cfg_file, "--worker")) != 0
    assert "--worker: needs --storage URL" in capsys.readouterr().err


@pytest.mark.slow
def test_killed_worker_job_is_taken_over_and_the_result_equals_one_machine(single, tmp_path, capsys):
    """SQLite study, shared artefact folder: a worker process is killed mid-job; the assembling process
    takes its job over after the heartbeat grace period and builds the same ensemble as one machine."""
    from mltrade.cli import main

    cfg_file, cfg = _cfg(tmp_path)
    url, arts, name = f"sqlite:///{tmp_path / 'study.db'}", tmp_path / "artefacts", default_study_name(cfg)
    cmd = [sys.executable, "-m", "mltrade.cli"] + _cli(cfg_file, "--storage", url, "--worker",
                                                       "--heartbeat", "1", "--artifacts", str(arts))
    worker = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=dict(os.environ, MPLBACKEND="Agg"))
    try:
        deadline = time.time() + 300
        while not _running(url, name):
            assert worker.poll() is None, worker.communicate()[0][-3000:]
            assert time.time() < deadline, "the worker never claimed a job"
            time.sleep(0.2)
    finally:
        worker.kill()                                                  # SIGKILL mid-job: its heartbeat stops
        worker.wait()
    lost = _running(url, name)
    assert len(lost) == 1
    assert main(_cli(cfg_file, "--storage", url, "--heartbeat", "1", "--artifacts", str(arts),
                     "--registry", str(tmp_path / "models"))) == 0
    out = capsys.readouterr().out
    assert out.startswith("device: ")
    assert f"trial {lost[0].number} lost its worker" in out and "assembled from the 3 agents" in out
    trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.user_attrs["key"] for t in done) == KEYS           # every job done exactly once
    assert [t.number for t in trials if t.state == TrialState.FAIL] == [lost[0].number]
    retry = next(t for t in done if t.user_attrs["key"] == lost[0].user_attrs["key"])
    assert retry.user_attrs["retry_of"] == lost[0].number
    assert all(os.path.exists(t.user_attrs["artefact"]) for t in done)
    files = sorted(f"{t.user_attrs['key']}.t{t.number}.agent.json" for t in done)
    assert sorted(p.name for p in (arts / name).iterdir()) == files
    _assert_same_result(single, _bundle(tmp_path / "models"))
    # the candidates' validation returns the workers recorded are the ones the assembly selected on
    by_key = {t.user_attrs["key"]: t.value for t in done}
    assert [by_key[k] for k in KEYS] == single[2]["folds"][0]["validation_agent_returns"]


@pytest.mark.slow
@pytest.mark.postgres
def test_two_worker_processes_on_postgres_build_the_one_machine_ensemble(single, pg_url, tmp_path, capsys):
    from mltrade.cli import main

    cfg_file, _ = _cfg(tmp_path)
    name = f"dqntest-{uuid.uuid4().hex[:8]}"
    common = _cli(cfg_file, "--storage", pg_url, "--study", name)
    env = dict(os.environ, MPLBACKEND="Agg")
    procs = [subprocess.Popen([sys.executable, "-m", "mltrade.cli"] + common + ["--worker"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    try:
        outs = [p.communicate(timeout=600)[0] for p in procs]
        for p, out in zip(procs, outs):
            assert p.returncode == 0, out[-3000:]
            assert "ran " in out and "study " + name in out
        assert main(common + ["--registry", str(tmp_path / "models")]) == 0      # assembles (all jobs done)
        out = capsys.readouterr().out
        assert "ran 0 job(s)" in out and "assembled from the 3 agents" in out
        trials = optuna.load_study(study_name=name, storage=pg_url).get_trials(deepcopy=False)
        assert sorted(t.user_attrs["key"] for t in trials) == KEYS             # no job run twice
        assert all(t.state == TrialState.COMPLETE and t.user_attrs["artefact"] == "rdb" for t in trials)
        ran = sum(int(o.split("ran ")[1].split(" ")[0]) for o in outs)
        assert ran == 3
        _assert_same_result(single, _bundle(tmp_path / "models"))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        optuna.delete_study(study_name=name, storage=pg_url)
