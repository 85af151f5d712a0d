"""NCP search and training: chronological splits, resumable pruned Optuna study, registry, CLI."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mltrade.models.ncp.synthetic import synthetic_daily_history, synthetic_market
from mltrade.models.ncp.train import (NCPSettings, best_params, dataset_for, directions, optimize, performance,
                                      score, split, train_final)


def _settings(tmp_path, **kw):
    base = dict(cell="cfc", n_folds=2, train_sessions=50, val_sessions=15, score_sessions=15, embargo=1,
                holdout_sessions=25, max_epochs=3, patience=2, state_dir=str(tmp_path), atr_bins=2,
                adapt_min_count=3)
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
    assert final.train_stop <= final.val_start and final.val_stop <= final.test_start


def test_objectives():
    r = np.array([0.1, -0.5, 0.2, 0.0])
    traded = np.array([True, True, True, False])
    assert score(r, "product", traded) == pytest.approx(np.log(1.1 * 0.5 * 1.2))
    assert score(r, "sharpe") == pytest.approx(r.mean() / r.std() * np.sqrt(252))
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
def test_optimize_resumes_prunes_and_registry_keeps_only_better(ds, tmp_path):
    s = _settings(tmp_path)
    logs = []
    study, res = optimize(s, n_trials=1, ds=ds, log=logs.append)
    assert len(study.trials) == 1 and res.kept and res.path
    assert (tmp_path / "optuna" / "ncp.db").exists()
    m = res.metrics
    assert set(m["baselines"]) >= {"always_long", "random_direction", "buy_and_hold_index"}
    assert m["holdout"][0] > m["val"][1]  # tested after everything it learnt from
    assert m["adaptation_range"][1] < m["holdout"][0]  # adaptation estimated before the holdout
    assert m["adaptation_range"][0] == m["search"][0] or m["adaptation_range"][0] > m["search"][0]
    # resumable: a second run continues the same study in the same SQLite file
    study2, res2 = optimize(s, n_trials=1, ds=ds, log=logs.append)
    assert len(study2.trials) == 2
    assert best_params(s) == study2.best_trial.params
    with pytest.raises(ValueError, match="other settings.*distance"):
        optimize(dataclasses.replace(s, distance=0.05), n_trials=1, ds=ds, log=logs.append)
    # the registry keeps the better holdout objective
    reg = s.registry()
    kept = reg.metrics(s.model_name)["holdout_objective"]
    assert kept == max(res.metrics["holdout_objective"], res2.metrics["holdout_objective"])
    assert res2.kept == (res2.metrics["holdout_objective"] > res.metrics["holdout_objective"])
    assert (reg.path(s.model_name) / "model.keras").exists()


@pytest.mark.slow
def test_cli_train_ncp_writes_a_loadable_model(tmp_path, monkeypatch):
    from mltrade.cli import main
    from mltrade.models.ncp.train import load_artifact
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[ncp]\nstart = "2017-06-01"\nend = "2018-12-31"\ncell = "cfc"\nmax_epochs = 2\n'
                   'train_sessions = 150\nval_sessions = 30\nholdout_sessions = 60\n')
    assert main(["train", "ncp", "--config", str(cfg), "--defaults", "--state-dir", str(tmp_path / "st")]) == 0
    model, meta = load_artifact(str(tmp_path / "st" / "models" / "ncp" / "current"))
    assert meta["settings"]["cell"] == "cfc" and meta["feature_source"] in ("shared", "local")
    assert len(meta["feature_names"]) == model.inputs[0].shape[-1]


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
