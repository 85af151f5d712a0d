"""The original's 53-value observation (44 + deviation tracking): causality, shapes, env, pipeline, strategy."""
import json
import warnings

import numpy as np
import pandas as pd
import pytest
from gymnasium.utils.env_checker import check_env

from mltrade.models.dqn.deviation import (EXTRA_COLUMNS, N_VALUES, DeviationModel, deviation_observations,
                                          walk_forward_deviation_observations)
from mltrade.models.dqn.observations import build_observations, original_observations
from tests.helpers import dqn_tables

ALPHAS, FRACS = DeviationModel.member_params(5, [1.0, 3.0, 10.0], 0.6, 0)
TRAIN_STOP, BURN_IN, REFIT = 250, 60, 20


def _walk(n, seed=3):
    rng = np.random.default_rng(seed)
    c = 5000 * np.exp(np.cumsum(rng.normal(0, 0.012, n)))
    o = np.r_[5000.0, c[:-1]] * np.exp(rng.normal(0, 0.003, n))
    h = np.maximum(o, c) * np.exp(np.abs(rng.normal(0, 0.004, n)))
    lo = np.minimum(o, c) * np.exp(-np.abs(rng.normal(0, 0.004, n)))
    return pd.DataFrame({"open": o, "high": h, "low": lo, "close": c},
                        index=pd.bdate_range("2003-01-01", periods=n))


def _wf(daily):
    return walk_forward_deviation_observations(daily, 0, TRAIN_STOP, ALPHAS, FRACS, refit_every=REFIT,
                                               burn_in=BURN_IN)


def _shock(daily, row):
    changed = daily.copy()
    changed.iloc[row] = changed.iloc[row] * 1.3
    return changed


def test_53_values_shapes_and_persistence(tmp_path):
    daily = _walk(320)
    obs, model = _wf(daily)
    assert obs.shape == (320, N_VALUES) == (320, 53)
    assert list(obs.columns) == list(original_observations(daily).columns) + EXTRA_COLUMNS
    assert obs.iloc[:BURN_IN + 1].isna().all().all() and obs.iloc[BURN_IN + 1:].notna().all().all()
    # the extra columns carry information: predictions vary, previous-day z is not constant
    assert obs["pred_close"].iloc[BURN_IN + 1:].std() > 0 and obs["dev_close"].iloc[BURN_IN + 1:].std() > 0
    assert (obs["pred_se"].iloc[BURN_IN + 1:] > 0).all()
    assert model.fit_range == [str(daily.index[2].date()), str(daily.index[TRAIN_STOP - 1].date())]
    model.save(tmp_path / "dev.json")
    loaded = DeviationModel.load(tmp_path / "dev.json")
    fixed = build_observations(daily, "original_deviation", deviation_model=loaded)
    pd.testing.assert_frame_equal(fixed, deviation_observations(daily, model))
    # after the training range the walk-forward builder uses the same fixed model
    pd.testing.assert_frame_equal(obs.iloc[TRAIN_STOP + 1:], fixed.iloc[TRAIN_STOP + 1:])
    with pytest.raises(ValueError, match="needs a fitted deviation model"):
        build_observations(daily, "original_deviation")
    with pytest.raises(FileNotFoundError, match="no deviation model"):
        DeviationModel.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"mean": [0.0]}))
    with pytest.raises(ValueError, match=r"bad.json: missing field\(s\) \['scale'"):
        DeviationModel.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="deviation_burn_in"):
        walk_forward_deviation_observations(daily, 0, 50, ALPHAS, FRACS, burn_in=60)
    with pytest.raises(ValueError, match="at least 2 members"):
        DeviationModel.member_params(1, [1.0], 0.6, 0)


@pytest.mark.parametrize("row", [BURN_IN + 2 * REFIT + 7, TRAIN_STOP - 3, TRAIN_STOP + 30])
def test_walk_forward_53_values_are_causal(row):
    """Session ``row``'s own bar (and everything after it) must not enter rows <= row."""
    daily = _walk(320)
    obs, _ = _wf(daily)
    # truncate-and-compare: the data ending at session `row` gives the same rows
    trunc, _ = walk_forward_deviation_observations(daily.iloc[:row + 1], 0, min(TRAIN_STOP, row + 1), ALPHAS,
                                                   FRACS, refit_every=REFIT, burn_in=BURN_IN)
    pd.testing.assert_frame_equal(obs.iloc[:row + 1], trunc)
    # a shock on session `row` changes nothing up to its row (also not the in-range training predictions:
    # no member ever predicts a training row it was fitted on), only the rows after it
    shocked, _ = _wf(_shock(daily, row))
    pd.testing.assert_frame_equal(obs.iloc[:row + 1], shocked.iloc[:row + 1])
    assert not np.allclose(obs.iloc[row + 1, 44:].to_numpy(), shocked.iloc[row + 1, 44:].to_numpy())


def test_fixed_model_53_values_are_causal():
    daily = _walk(320)
    _, model = _wf(daily)
    full = deviation_observations(daily, model)
    for row in (40, 200, 300):
        pd.testing.assert_frame_equal(full.iloc[:row + 1], deviation_observations(daily.iloc[:row + 1], model))
        shocked = deviation_observations(_shock(daily, row), model)
        pd.testing.assert_frame_equal(full.iloc[:row + 1], shocked.iloc[:row + 1])
        assert not np.allclose(full.iloc[row + 1, -5:-1], shocked.iloc[row + 1, -5:-1])  # yesterday's z moved


def test_check_env_with_53_values():
    from mltrade.models.dqn.env import KnockoutEnv

    daily = _walk(320)
    obs, _ = _wf(daily)
    for mode in ("day", "night"):
        env = KnockoutEnv(obs, daily, mode=mode)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check_env(env, skip_render_check=True)
        assert env.observation_space.shape == (53,)
        assert env.index[0] == daily.index[BURN_IN + 1]          # burn-in rows are skipped


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny day ensemble on 53 values trained through the walk-forward pipeline (sample 2012 .. 2014-03)."""
    from mltrade.config import load_config
    from mltrade.models.dqn.pipeline import train_walk_forward

    tmp = tmp_path_factory.mktemp("dqn_dev")
    cfg = dict(load_config()["dqn"])
    cfg.update(start="2012-01-01", end="2014-03-31", train_days=300, val_days=100, test_days=60, embargo=2,
               agents=2, candidates=2, steps=200, episode_length=100, sessions=["day"],
               observations="original_deviation", deviation_burn_in=100, deviation_members=4,
               registry=str(tmp / "models"))
    summary = train_walk_forward(cfg, progress=False, log=lambda m: None)
    return tmp, cfg, summary


def test_pipeline_with_53_values_keeps_and_loads_the_model(trained):
    from mltrade.feeds.sample import load_daily
    from mltrade.models.dqn.bundle import load_bundle
    from mltrade.models.registry import ModelRegistry

    tmp, cfg, summary = trained
    assert summary["kept"] is True and np.isfinite(summary["oos_return"])
    path = ModelRegistry(tmp / "models").path("dqn")
    assert (path / "day" / "deviation_model.json").exists()
    model = load_bundle(path)["day"]
    assert model.settings["observations"] == "original_deviation"
    assert len(model.ensemble.columns) == 53 and model.ensemble.obs_kind == "original_deviation"
    assert model.deviation_model is not None and len(model.deviation_model.coefs) == 4
    # the stage-1 model was fitted on the fold's training range only (ends before validation)
    fold = summary["folds"][0]["fold"]
    assert model.deviation_model.fit_range[1] <= fold["train"][1] < fold["val"][0]
    daily = load_daily("2013-06-01", "2014-03-31")
    table = model.decide(daily)
    assert len(table) == len(daily) and table["valid"].iloc[3:].all()
    assert set(np.unique(table["trade_direction"])) <= {-1, 0, 1}
    # a bundle that says original_deviation but lost its deviation model is refused, naming the file
    (path / "day" / "deviation_model.json").rename(tmp / "moved.json")
    try:
        with pytest.raises(FileNotFoundError, match="deviation_model.json"):
            load_bundle(path)
    finally:
        (tmp / "moved.json").rename(path / "day" / "deviation_model.json")


@pytest.mark.slow
def test_strategy_batch_and_live_agree_with_53_values(trained):
    from mltrade.feeds.sample import load_daily

    tmp, _, _ = trained
    daily = load_daily("2014-01-02", "2014-03-31")
    tables = dqn_tables(daily, str(tmp / "models"), history=20)
    live_t, batch_t = tables[True], tables[False]
    common = live_t.index.intersection(batch_t.index)
    assert len(common) > 30
    assert (live_t.loc[common, "direction"] == batch_t.loc[common, "direction"]).all()
    assert np.allclose(live_t.loc[common, "distance"], batch_t.loc[common, "distance"])
    # the ensemble's own OHLC predictions read all 53 values: equal live and batch means equal observations
    for col in ("mean_open", "mean_close", "se_close"):
        assert np.allclose(live_t.loc[common, col], batch_t.loc[common, col], rtol=1e-5)
