"""``[dqn] mode = "intraday"``: decide after N candles, trade the rest of the session; pipeline end to end."""
import numpy as np
import pandas as pd
import pytest

from mltrade.baselines.simulation import TradeCosts
from mltrade.models.dqn.env import KnockoutEnv
from mltrade.models.dqn.observations import original_observations
from mltrade.models.dqn.simulation import IntradaySim, intraday_observations_for

N = 6


@pytest.fixture(scope="module")
def bars():
    from mltrade.feeds.sample import sample_intraday
    return sample_intraday("2012-01-01", "2014-03-31")


def test_intraday_simulation_equals_the_environment(bars):
    part = bars[bars.index < pd.Timestamp("2012-04-01", tz=bars.index.tz)]
    sim = IntradaySim(part, N)
    obs = intraday_observations_for(original_observations(sim.daily), sim)
    assert obs.shape[1] == 44 + 3 * N
    env = KnockoutEnv(obs, sim.daily, mode="intraday", intraday=part, n_candles=N)
    assert env.observation_space.shape == (44 + 3 * N,)          # candle columns are not added twice
    rng = np.random.default_rng(0)
    acts = rng.integers(0, env.nb_actions, len(env.index))
    daily = sim.daily.loc[env.index]
    _, frame = sim.result(daily, env.directions[acts], env.distances[acts], TradeCosts())
    rows = np.arange(len(acts))
    assert np.allclose(frame["entry"].to_numpy(), env.entry[rows, acts])
    assert np.allclose(frame["exit"].to_numpy(), env.exit[rows, acts])
    # entry is priced at the open of bar N of the session, not at the session open
    day = env.index[5]
    g = part[part.index.normalize().tz_localize(None) == day]
    assert sim.paths[day][0][0] == g["open"].iloc[N] != g["open"].iloc[0]
    with pytest.raises(ValueError, match="n_candles"):
        IntradaySim(part, 0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, bars):
    from mltrade.config import load_config
    from mltrade.models.dqn.pipeline import train_walk_forward

    tmp = tmp_path_factory.mktemp("dqn_intraday")
    cfg = dict(load_config()["dqn"])
    cfg.update(mode="intraday", n_candles=N, train_days=300, val_days=100, test_days=60, embargo=2, agents=2,
               candidates=2, steps=200, episode_length=100, registry=str(tmp / "models"))
    summary = train_walk_forward(cfg, progress=False, log=lambda m: None, intraday=bars)
    return tmp, summary


def test_intraday_pipeline_keeps_and_loads_the_model(trained, bars):
    from mltrade.models.dqn.bundle import load_bundle
    from mltrade.models.registry import ModelRegistry

    tmp, summary = trained
    assert summary["sessions"] == ["intraday"] and summary["kept"] is True
    m = summary["folds"][0]
    assert m["session"] == "intraday" and m["baselines"]["always_long"]["sessions"] == 60
    assert np.isfinite(summary["oos_return_intraday"])
    bundle = load_bundle(ModelRegistry(tmp / "models").path("dqn"))
    model = bundle["intraday"]
    assert model.settings["mode"] == "intraday" and model.settings["n_candles"] == N
    assert len(model.ensemble.columns) == 44 + 3 * N
    with pytest.raises(ValueError, match="needs the intraday bars"):
        model.decide(None)
    # causal: the decision for a session uses only its first N bars (and earlier sessions)
    span = bars[bars.index >= pd.Timestamp("2013-10-01", tz=bars.index.tz)]
    full = model.decide(None, intraday=span)
    day = full.index[40]
    dates = span.index.normalize().tz_localize(None)
    before = span[dates < day]
    today = span[dates == day]
    cut = model.decide(None, intraday=pd.concat([before, today.iloc[:N + 1]]))
    assert cut.index[-1] == day
    for col in ("direction", "agreement", "n_long", "n_short", "mean_close"):
        assert np.isclose(cut.loc[day, col], full.loc[day, col]), col
    shocked = pd.concat([before, today.iloc[:N + 1], today.iloc[N + 1:] * 1.2])
    assert np.isclose(model.decide(None, intraday=shocked).loc[day, "mean_close"], full.loc[day, "mean_close"])


def test_train_dqn_rejects_a_bad_mode(tmp_path):
    from mltrade.config import load_config
    from mltrade.models.dqn.pipeline import train_walk_forward

    cfg = dict(load_config()["dqn"], mode="weekly", registry=str(tmp_path))
    with pytest.raises(ValueError, match="dqn.mode: expected 'daily' or 'intraday'"):
        train_walk_forward(cfg, progress=False)


def test_cli_mode_flags_override_the_config():
    import argparse

    from mltrade.commands.train_dqn import overrides, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["train", "dqn", "--mode", "intraday", "--n-candles", "12"])
    assert overrides(args) == {"dqn": {"mode": "intraday", "n_candles": 12}}
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "dqn", "--mode", "weekly"])


def test_strategy_refuses_intraday_session_by_name(trained):
    import backtrader as bt

    from mltrade.feeds.bars import IndexData
    from mltrade.feeds.sample import load_daily
    from mltrade.strategies.dqn import DQNEnsembleStrategy

    tmp, _ = trained
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(IndexData(dataframe=load_daily("2014-01-02", "2014-01-31"), exchange="XNAS", interval=None))
    cerebro.addstrategy(DQNEnsembleStrategy, registry=str(tmp / "models"), session="intraday")
    with pytest.raises(ValueError, match="'intraday' DQN models"):
        cerebro.run()
