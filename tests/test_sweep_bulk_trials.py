"""A batch of finished trials written in one transaction reads back exactly as Optuna's own ``add_trials`` writes it."""
from __future__ import annotations

import math
import threading

import optuna
import pytest

from mltrade.sweep.bulk_trials import add_finished_trials

optuna.logging.set_verbosity(optuna.logging.WARNING)
TS = optuna.trial.TrialState


def _finished_trials(n: int, seed: int = 0):
    """``n`` trials of an in-memory study: completed, pruned, infinite and NaN figures, every kind of parameter."""
    local = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    for i in range(n):
        t = local.ask()
        x = t.suggest_float("x", -1.0, 1.0)
        t.suggest_int("k", 3, 60)
        t.suggest_float("lr", 1e-4, 1e-1, log=True)
        t.suggest_float("q", 0.0, 1.0, step=0.25)
        t.suggest_categorical("rule", ["momentum", "long", None, 2])
        t.set_user_attr("sweep_uid", f"w:{seed}:{i}")
        t.set_user_attr("returns", [x, -x, 0.5])
        local._storage.set_trial_system_attr(t._trial_id, "relative:0", {"x": x, "i": i})
        t.report(x, 0)
        t.report(float("nan") if i % 5 == 0 else 2 * x, 1)
        if i % 3 == 1:
            local.tell(t, state=TS.PRUNED)
        else:
            local.tell(t, float("inf") if i == 2 else float("-inf") if i == 5 else x * x)
    return local.get_trials(deepcopy=False)


def _view(t) -> dict:
    return {"number": t.number, "state": t.state, "values": t.values, "params": t.params,
            "distributions": t.distributions, "user_attrs": t.user_attrs, "system_attrs": t.system_attrs,
            "datetime_start": t.datetime_start, "datetime_complete": t.datetime_complete,
            "intermediate": {k: "nan" if math.isnan(v) else v for k, v in t.intermediate_values.items()}}


def _read(url: str, name: str):
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def test_a_batch_reads_back_exactly_as_optunas_own_writes(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    trials = _finished_trials(12)
    ours = optuna.create_study(study_name="bulk", storage=url, direction="maximize")
    theirs = optuna.create_study(study_name="optuna", storage=url, direction="maximize")
    add_finished_trials(ours, trials[:5])
    add_finished_trials(ours, trials[5:])
    theirs.add_trials(trials)
    a, b = _read(url, "bulk"), _read(url, "optuna")
    assert len(a) == len(b) == 12
    assert [_view(x) for x in a] == [_view(y) for y in b]
    assert any(math.isinf(t.value) for t in a if t.value is not None)
    # the best trial, pruned counts and the sampler's view agree too
    assert optuna.load_study(study_name="bulk", storage=url).best_trial.number == theirs.best_trial.number
    assert [t.number for t in a if t.state == TS.PRUNED] == [t.number for t in b if t.state == TS.PRUNED]


def test_numbers_continue_across_batches_and_optunas_own_writes(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="mix", storage=url, direction="maximize")
    trials = _finished_trials(16)
    study.add_trials(trials[:3])
    add_finished_trials(study, trials[3:10])
    study.add_trials(trials[10:12])
    add_finished_trials(study, trials[12:])
    got = _read(url, "mix")
    assert [t.number for t in got] == list(range(16))
    assert [t.user_attrs["sweep_uid"] for t in got] == [t.user_attrs["sweep_uid"] for t in trials]


def _concurrent_writers(url: str, name: str) -> None:
    optuna.create_study(study_name=name, storage=url, direction="maximize")
    errors = []

    def writer(seed: int) -> None:
        try:
            kw = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
            study = optuna.load_study(study_name=name, storage=optuna.storages.RDBStorage(url, engine_kwargs=kw))
            trials = _finished_trials(24, seed=seed)
            for i in range(0, 24, 6):
                add_finished_trials(study, trials[i:i + 6])
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    got = _read(url, name)
    assert sorted(t.number for t in got) == list(range(72))
    uids = [t.user_attrs["sweep_uid"] for t in got]
    assert len(set(uids)) == 72
    for seed in range(3):   # each writer's batches keep their order in the numbering
        mine = [t for t in got if t.user_attrs["sweep_uid"].startswith(f"w:{seed}:")]
        assert [int(t.user_attrs["sweep_uid"].split(":")[2]) for t in sorted(mine, key=lambda t: t.number)] == \
            list(range(24))


def test_concurrent_writers_get_unique_gap_free_numbers(tmp_path):
    _concurrent_writers(f"sqlite:///{tmp_path / 's.db'}", "race")


@pytest.mark.postgres
@pytest.mark.slow
def test_concurrent_writers_on_postgres_get_unique_gap_free_numbers(pg_url):
    import uuid

    _concurrent_writers(pg_url, f"race-{uuid.uuid4().hex[:8]}")


def test_a_conflicting_distribution_is_refused_before_anything_is_written(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="dist", storage=url, direction="maximize")
    add_finished_trials(study, _finished_trials(3))
    bad = optuna.trial.create_trial(params={"x": "a"}, value=1.0,
                                    distributions={"x": optuna.distributions.CategoricalDistribution(["a", "b"])})
    good = optuna.trial.create_trial(params={"k": 5}, value=1.0,
                                     distributions={"k": optuna.distributions.IntDistribution(3, 60)})
    with pytest.raises(ValueError):
        add_finished_trials(study, [good, bad])
    assert len(_read(url, "dist")) == 3
    with pytest.raises(ValueError, match="finished"):
        add_finished_trials(study, [optuna.trial.create_trial(state=TS.RUNNING)])
    assert len(_read(url, "dist")) == 3


def test_other_storages_go_through_optunas_add_trials():
    study = optuna.create_study(direction="maximize")
    add_finished_trials(study, _finished_trials(5))
    add_finished_trials(study, [])
    assert [t.number for t in study.get_trials()] == list(range(5))
