"""NCP search and training: chronological splits, resumable pruned Optuna study, registry, CLI."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mltrade.models.ncp.artifact import format_metrics
from mltrade.models.ncp.data import dataset_for, split
from mltrade.models.ncp.final import train_final
from mltrade.models.ncp.scoring import directions, performance, score
from mltrade.models.ncp.search import best_params, optimize
from mltrade.models.ncp.settings import NCPSettings
from mltrade.models.ncp.synthetic import synthetic_daily_history, synthetic_market

PARAMS = {"dense1": 8, "dense2": 4, "ltc_units": 6, "ltc_units2": 5, "head_units": 4, "epochs": 3}


def _settings(tmp_path, **kw):
    base = dict(cell="cfc", n_folds=2, train_sessions=50, val_sessions=15, score_sessions=15, embargo=1,
                holdout_sessions=25, max_epochs=3, patience=2, state_dir=str(tmp_path), atr_bins=2,
                adapt_min_count=3, seeds=1)
    base.update(kw)
    return NCPSettings(**base)


@pytest.fixture(scope="module")
def ds():
    bars = synthetic_market("2014-01-02", 150, planted=True, seed=21)
    return dataset_for(NCPSettings(), bars, synthetic_daily_history(bars, 260, seed=22))


def test_split_is_chronological_and_holdout_untouched_by_search(ds, tmp_path):
    s = _settings(tmp_path)
    folds, final = split(ds, s)
    assert final.test_stop == len(ds) and final.test_stop - final.test_start == s.holdout_sessions
    for f in folds:
        assert f.train_stop <= f.val_start < f.val_stop <= f.test_start < f.test_stop
        assert f.test_stop <= final.test_start - s.embargo  # the search never sees the holdout
        # nor the final model's early-stopping window: selection, early stopping and holdout are disjoint
        assert f.test_stop <= final.val_start - s.embargo
    assert final.train_stop <= final.val_start and final.val_stop <= final.test_start - s.embargo


def test_objectives():
    r = np.array([0.1, -0.5, 0.2, 0.0])
    traded = np.array([True, True, True, False])
    assert score(r, "product", traded) == pytest.approx(np.log(1.1 * 0.5 * 1.2))
    assert score(r, "sharpe") == pytest.approx(r.mean() / r.std(ddof=1) * np.sqrt(252))
    with pytest.raises(ValueError, match="objective"):
        score(r, "calmar")
    np.testing.assert_array_equal(directions(np.array([0.2, 0.5, 0.55, 0.8]), 0.6), [-1, 0, 0, 1])
    np.testing.assert_array_equal(directions(np.array([0.49, 0.5])), [-1, 1])


def test_performance_uses_the_chosen_direction_returns(ds):
    d = np.where(np.arange(len(ds)) % 2 == 0, 1, -1)
    p = performance(d, ds, "product")
    r = np.where(d > 0, ds.long_return, ds.short_return)
    assert p["log_product"] == pytest.approx(np.log(np.maximum(1 + r, 1e-9)).sum())
    assert p["trades"] == len(ds)


@pytest.mark.slow
def test_optimize_resumes_prunes_and_registry_selects_on_validation_only(ds, tmp_path):
    s = _settings(tmp_path, jobs=1)
    logs = []
    study, res = optimize(s, n_trials=1, ds=ds, log=logs.append)
    assert len(study.trials) == 1 and res.kept == (not res.degenerate)
    assert (tmp_path / "optuna" / "ncp.db").exists()
    assert any("epochs/s" in line for line in logs)  # the search prints its training speed
    m = res.metrics
    assert set(m["baselines"]) >= {"always_long", "random_direction", "buy_and_hold_index"}
    assert m["holdout"][0] > m["val"][1]  # tested after everything it learnt from
    # the selection figure comes from the validation folds, which end before the final early stopping
    # window, which ends before the holdout; the adaptation is estimated on the folds' scored ranges
    es = m["early_stopping_range"]
    assert m["selection_range"][1] < es[0] <= es[1] < m["holdout"][0]
    assert m["adaptation_range"] == m["selection_range"]
    sig = m["significance"]  # holdout intervals and SPA p-values against the baselines
    assert set(sig["spa_pvalue"]) == {"buy_and_hold_index", "always_long"} and sig["n_sessions"] == 25
    assert m["validation_objective"] == pytest.approx(np.mean(m["validation_folds"]))
    assert m["validation_objective"] == pytest.approx(study.best_trial.value)  # same seed, same folds
    # PBO of the search, in ncp.json and the CLI text: one complete trial is not computable, said so
    assert m["pbo"]["pbo"] is None and "1 trial" in m["pbo"]["reason"]
    assert "search overfitting" in format_metrics(m) and "not computable" in format_metrics(m)
    # resumable: a second run continues the same study in the same SQLite file
    study2, res2 = optimize(s, n_trials=1, ds=ds, log=logs.append)
    assert len(study2.trials) == 2
    assert study2.trials[1].params != study2.trials[0].params or "duplicate_of" in study2.trials[1].user_attrs
    with pytest.raises(ValueError, match="other settings.*distance"):
        optimize(dataclasses.replace(s, distance=0.05), n_trials=1, ds=ds, log=logs.append)
    # the registry compares validation objectives, never holdout ones
    reg = s.registry()
    offers = [r for r in (res, res2) if not r.degenerate]
    if offers:
        kept = reg.metrics(s.model_name)
        assert kept["_metric"] == "validation_objective"
        assert kept["validation_objective"] == max(r.metrics["validation_objective"] for r in offers)
        assert (reg.path(s.model_name) / "model.keras").exists()
    if not res.degenerate and not res2.degenerate:
        assert res2.kept == (res2.metrics["validation_objective"] > res.metrics["validation_objective"])


@pytest.mark.slow
def test_constant_model_is_degenerate_not_kept_and_holdout_constant_is_flagged(ds, tmp_path, capsys):
    from mltrade.commands.train_ncp import report_result
    # a market where every long certificate wins: the model learns to say "long" on every session
    always_up = dataclasses.replace(ds, label=np.ones(len(ds), "float32"))
    s = _settings(tmp_path)
    res = train_final(dict(PARAMS, learning_rate=0.05, epochs=15, batch_size=16), always_up, s)
    m = res.metrics
    assert m["degenerate"] and "always long" in m["degenerate_reason"]
    assert m["holdout_constant"] and m["holdout_direction"] == "long"
    assert res.artifact["metrics"]["degenerate"]  # in the model's metadata too
    assert not res.kept and s.registry().path(s.model_name) is None  # refused
    report_result(res, s)
    out = capsys.readouterr().out
    assert "DEGENERATE" in out and "NOT kept (degenerate" in out and "constant on the holdout" in out


@pytest.mark.slow
def test_search_workers_have_own_seeds_and_never_score_a_parameter_set_twice(ds, tmp_path):
    import optuna
    from mltrade.models.ncp.search import run_trials, worker_identity
    (a, sa), (b, sb) = worker_identity(), worker_identity()
    assert a != b and sa != sb
    s = _settings(tmp_path, max_epochs=3)
    url = s.storage_url()
    logs = []
    # two workers that would propose the same first trial (same seed): the second is not scored again
    run_trials(s, url, 1, ds, logs.append, seed=5, worker="w1")
    run_trials(s, url, 1, ds, logs.append, seed=5, worker="w2")
    study = optuna.load_study(study_name=s.study, storage=url)
    t0, t1 = study.trials
    assert t0.params == t1.params and t1.user_attrs["duplicate_of"] == 0
    assert t1.state == optuna.trial.TrialState.PRUNED and "not scored again" in logs[-1]
    assert {t0.user_attrs["worker"], t1.user_attrs["worker"]} == {"w1", "w2"}
    # the scored trial keeps its per-session returns on the folds' scored ranges (what PBO is computed on):
    # each the long, the short or no trade of its own session; the duplicate keeps none
    from mltrade.models.ncp.data import split
    from mltrade.models.ncp.search import RETURNS_ATTR, search_pbo
    from mltrade.pbo import decode_returns
    r = decode_returns(t0.user_attrs[RETURNS_ATTR])
    folds, _ = split(ds, s)
    sub = ds.subset(np.concatenate([np.arange(f.test_start, f.test_stop) for f in folds]))
    assert len(r) == len(sub) == 30 and RETURNS_ATTR not in t1.user_attrs
    assert all(np.isclose(x, 0.0) or np.isclose(x, lo) or np.isclose(x, sh)
               for x, lo, sh in zip(r, sub.long_return, sub.short_return))
    assert t0.value == pytest.approx(np.mean([np.log(np.maximum(1 + r[k:k + 15][r[k:k + 15] != 0], 1e-9)).sum()
                                              for k in (0, 15)]))
    res = search_pbo(study)  # one complete trial: not computable, and why
    assert res["pbo"] is None and "1 trial" in res["reason"] and "not computable" in res["words"]


@pytest.mark.slow
def test_two_local_worker_processes_share_one_study(ds, tmp_path):
    import optuna
    s = _settings(tmp_path, max_epochs=2, jobs=2)
    study, res = optimize(s, n_trials=2, ds=ds, log=lambda m: None)
    study = optuna.load_study(study_name=s.study, storage=s.storage_url())
    assert len(study.trials) == 2
    workers = {t.user_attrs.get("worker") for t in study.trials}
    assert len(workers) == 2 and None not in workers
    assert study.trials[0].params != study.trials[1].params
    assert not list((tmp_path / "cache").glob("*run-*"))  # the hand-over file of an explicit dataset is gone


def test_dataset_cache_round_trip_and_key(tmp_path, ds):
    from mltrade.feeds.loader import write_csv
    from mltrade.models.ncp.data import cached_dataset, dataset_key, load_dataset, save_dataset
    p = save_dataset(ds, str(tmp_path / "d.npz"))
    back = load_dataset(p)
    for k in ("dates", "daily", "seq", "atr", "price", "label", "long_return", "short_return", "long_exit"):
        np.testing.assert_array_equal(getattr(back, k), getattr(ds, k))
    assert back.feature_names == ds.feature_names and not list(tmp_path.glob(".tmp-*"))
    bars = synthetic_market("2016-01-04", 30, seed=3)
    write_csv(bars, tmp_path / "bars.csv")
    write_csv(synthetic_daily_history(bars, 260, seed=4), tmp_path / "daily.csv")
    s = NCPSettings(data=str(tmp_path / "bars.csv"), daily_history=str(tmp_path / "daily.csv"), start="",
                    end="", state_dir=str(tmp_path / "st"))
    logs = []
    first = cached_dataset(s, logs.append)
    second = cached_dataset(s, logs.append)
    assert "built" in logs[0] and "from the cache" in logs[1]
    np.testing.assert_array_equal(first.seq, second.seq)
    key = dataset_key(s)
    assert key == dataset_key(dataclasses.replace(s, trials=3))  # run-only settings don't matter
    assert key != dataset_key(dataclasses.replace(s, distance=0.05))
    write_csv(synthetic_market("2016-01-04", 30, seed=5), tmp_path / "bars.csv")  # other data, other key
    assert dataset_key(s) != key
    (tmp_path / "bad.npz").write_text("not a dataset")
    with pytest.raises(ValueError, match="bad.npz"):
        load_dataset(str(tmp_path / "bad.npz"))


@pytest.mark.slow
def test_cli_train_ncp_writes_a_loadable_model_or_says_why_not(tmp_path, monkeypatch, capsys):
    from mltrade.cli import main
    from mltrade.models.ncp.artifact import load_artifact
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[ncp]\nstart = "2017-06-01"\nend = "2018-12-31"\ncell = "cfc"\nmax_epochs = 2\n'
                   'train_sessions = 150\nval_sessions = 30\nscore_sessions = 40\nholdout_sessions = 60\n')
    assert main(["train", "ncp", "--config", str(cfg), "--defaults", "--state-dir",
                 str(tmp_path / "st")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("device: ") and "(selection): product = " in out
    reg = tmp_path / "st" / "models" / "ncp"
    if "DEGENERATE model: " in out:  # a constant model is said and refused
        assert "NOT kept (degenerate: " in out and not (reg / "current").exists()
        assert "backtest it with" not in out and ": None" not in out   # no advice to backtest a refused model
        return
    model, meta = load_artifact(str(reg / "current"))
    assert meta["settings"]["cell"] == "cfc" and meta["feature_source"] in ("shared", "local")
    assert len(meta["feature_names"]) == model.inputs[0].shape[-1]
    assert meta["metrics"]["degenerate"] is False


def test_cli_rejects_unknown_config_keys_and_bad_params(tmp_path):
    from mltrade.cli import main
    cfg = tmp_path / "c.toml"
    cfg.write_text('[ncp]\nlayers = 3\n')
    assert main(["train", "ncp", "--config", str(cfg)]) == 2
    assert main(["train", "ncp", "--params", '{"bogus": 1}', "--state-dir", str(tmp_path)]) == 2
    with pytest.raises(ValueError, match="ncp.objective"):
        NCPSettings(objective="calmar")


def test_optimize_cli_is_registered_and_validates_trials(tmp_path):
    from mltrade.cli import build_parser, main
    args = build_parser().parse_args(["optimize", "ncp", "--trials", "3", "--storage", "sqlite:///x.db",
                                      "--cell", "cfc"])
    assert args.trials == 3 and args.storage == "sqlite:///x.db" and args.cell == "cfc"
    assert main(["optimize", "ncp", "--trials", "0", "--state-dir", str(tmp_path)]) == 2


@pytest.mark.slow
def test_compiled_training_loop_traces_once_and_restores_the_best_epoch(ds):
    from mltrade.models.ncp.fit import FoldTrainer, _bce, config_from_params
    from mltrade.models.ncp.model import predict_proba
    s = NCPSettings(cell="cfc")
    trainer = FoldTrainer(config_from_params(dict(PARAMS, learning_rate=0.02), ds.daily.shape[1], s, 1),
                          epochs=6, batch_size=16, patience=2)
    train, val = ds.subset(slice(0, 45)), ds.subset(slice(46, 70))  # 45 rows: a partial last batch
    model = trainer.fit(train, val)
    h = trainer.history.history
    assert 1 <= len(h["loss"]) <= 6 and len(h["val_loss"]) == len(h["loss"])
    # early stopping restored the kept weights: the logistic skip alone (before the first epoch) or an
    # epoch that beat it, never one worse than it
    kept = trainer.val_loss
    assert kept in h["val_loss_start"] + h["val_loss"] and kept <= h["val_loss_start"][0]
    assert _bce(val.label, predict_proba(model, val.daily, val.seq)) == pytest.approx(kept, rel=1e-5)
    trainer.fit(ds.subset(slice(0, 61)), val)  # another fold, another size: no new trace
    assert trainer._step.experimental_get_tracing_count() == 1
    assert trainer.epochs_run == len(h["loss"]) + len(trainer.history.history["loss"])
