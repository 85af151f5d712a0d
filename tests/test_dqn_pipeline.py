"""Walk-forward training end to end: random-walk edge, registry, CLI, backtrader strategy and report."""
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mltrade.config import load_config
from mltrade.models.registry import ModelRegistry
from tests.helpers import dqn_tables


def _random_walk(n, seed):
    rng = np.random.default_rng(seed)
    gap = rng.normal(0, 0.003, n)
    body = rng.normal(0, 0.012, n)
    close = np.empty(n)
    opn = np.empty(n)
    prev = 5000.0
    for i in range(n):
        opn[i] = prev * np.exp(gap[i])
        close[i] = opn[i] * np.exp(body[i])
        prev = close[i]
    hi = np.maximum(opn, close) * np.exp(np.abs(rng.normal(0, 0.004, n)))
    lo = np.minimum(opn, close) * np.exp(-np.abs(rng.normal(0, 0.004, n)))
    return pd.DataFrame({"open": opn, "high": hi, "low": lo, "close": close},
                        index=pd.bdate_range("2001-01-01", periods=n))


def _small_cfg(tmp_path, **kw):
    cfg = dict(load_config()["dqn"])
    cfg.update(registry=str(tmp_path / "models"), agents=3, candidates=4, steps=500, train_days=400,
               val_days=150, test_days=300, embargo=3, sessions=["day"], episode_length=100)
    cfg.update(kw)
    return cfg


@pytest.mark.slow
def test_random_walk_out_of_sample_edge_is_not_significant(tmp_path):
    from mltrade.models.dqn.observations import build_observations
    from mltrade.models.dqn.pipeline import train_session_fold
    from mltrade.models.walkforward import walk_forward_folds

    daily = _random_walk(900, seed=11)
    cfg = _small_cfg(tmp_path)
    obs = build_observations(daily)
    fold = walk_forward_folds(daily.index, 1, 400, 150, 300, 3)[0]
    res = train_session_fold(cfg, daily, obs, fold, "day", progress=False, log=lambda m: None)
    dec = res.decisions
    test = daily.iloc[fold.test]
    move = (test["close"] / test["open"] - 1.0).to_numpy()
    d = dec["direction"].to_numpy()
    edge = d[d != 0] * move[d != 0]
    assert len(edge) >= 20, "the ensemble must trade for the test to say anything"
    t, p = stats.ttest_1samp(edge, 0.0)
    assert p > 0.01, f"random walk: directional edge {edge.mean():.5f} looks significant (p={p:.4f})"
    m = res.metrics
    assert set(m["baselines"]) == {"buy_and_hold", "always_long", "random_direction"}
    assert m["fold"]["test"][0] == str(daily.index[fold.test_start].date())
    assert len(res.ensemble) == 3 and sum(s["kept"] for s in res.ensemble.specs) == 3


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny day ensemble trained through the CLI on the sample data (2012 .. 2014-03)."""
    from mltrade.cli import main

    tmp = tmp_path_factory.mktemp("dqn")
    cfg_file = tmp / "dqn.toml"
    cfg_file.write_text(
        "[dqn]\nstart = \"2012-01-01\"\nend = \"2014-03-31\"\ntrain_days = 300\nval_days = 100\n"
        "test_days = 60\nembargo = 2\ncandidates = 2\nepisode_length = 100\n"
        f"registry = \"{tmp / 'models'}\"\n")
    argv = ["train", "dqn", "--config", str(cfg_file), "--agents", "2", "--steps", "300", "--sessions",
            "day,night", "--quiet"]
    assert main(argv) == 0
    return tmp, argv


@pytest.mark.slow
def test_cli_trains_into_registry_and_keeps_only_better(trained):
    from mltrade.cli import main

    tmp, argv = trained
    reg = ModelRegistry(tmp / "models")
    path = reg.path("dqn")
    assert path is not None and (path / "day" / "ensemble.json").exists()
    assert (path / "day" / "deviations.parquet").exists() and (path / "config.json").exists()
    metrics = reg.metrics("dqn")
    assert "oos_return" in metrics and metrics["folds"][0]["baselines"]["buy_and_hold"]["sessions"] == 60
    # the same run again (same seed, reproducible) is not better: the kept model stays
    assert main(argv) == 0
    assert reg.path("dqn") == path and reg.history("dqn")[-1]["kept"] is False


@pytest.mark.slow
def test_backtest_trades_out_of_sample_and_reports(trained):
    from mltrade.backtest import run_backtest

    tmp, _ = trained
    path = ModelRegistry(tmp / "models").path("dqn")
    oos_start = pd.Timestamp(json.loads((path / "day" / "settings.json").read_text())["val_end"])
    cfg = load_config(None, {"backtest": {"start": "2014-01-02", "end": "2014-02-28",
                                          "out": str(tmp / "reports"), "baselines": False},
                             "strategy": {"name": "dqn", "params": {"registry": str(tmp / "models")}}})
    res = run_backtest(cfg, run_name="dqn")
    strat = res.strategy
    assert strat.table is not None and len(strat.decisions) > 0
    sessions = [pd.Timestamp(d["info_session"]) for d in strat.decisions]
    assert min(sessions) > oos_start                   # only out-of-sample sessions are traded
    by_session = strat.table
    for d in strat.decisions:                          # executed decisions are the gated vote
        assert d["direction"] == by_session.loc[pd.Timestamp(d["info_session"]), "trade_direction"]
    if len(res.trades):
        assert set(res.trades["exit_reason"]) <= {"session_end", "stop", "knockout"}
    html = (res.run_dir / "report.html").read_text()
    for title in ("vote distribution", "gate decisions", "out-of-sample scope", "agreement",
                  "deviation tracking"):
        assert title in html


@pytest.mark.slow
def test_live_per_session_votes_equal_batch_votes(trained):
    from mltrade.feeds.sample import load_daily

    tmp, _ = trained
    daily = load_daily("2013-12-01", "2014-03-31")
    tables = dqn_tables(daily, str(tmp / "models"), history=40)
    live_t, batch_t = tables[True], tables[False]
    common = live_t.index.intersection(batch_t.index)
    assert len(common) > 40
    assert (live_t.loc[common, "direction"] == batch_t.loc[common, "direction"]).all()
    assert np.allclose(live_t.loc[common, "distance"], batch_t.loc[common, "distance"])


@pytest.mark.slow
def test_broker_fills_match_the_session_simulation(trained):
    """The strategy's trades on KnockoutBroker equal trade_outcomes priced with mltrade.products."""
    import backtrader as bt

    from mltrade import products as P
    from mltrade.analyzers import KnockoutTrades
    from mltrade.brokers import KnockoutBroker
    from mltrade.feeds.bars import IndexData
    from mltrade.feeds.sample import load_daily
    from mltrade.models.baselines import REASONS, TradeCosts, trade_outcomes
    from mltrade.strategies.dqn import DQNEnsembleStrategy

    tmp, _ = trained
    daily = load_daily("2013-06-01", "2014-03-31")
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(IndexData(dataframe=daily, exchange="XNAS", interval=None))
    cerebro.broker = KnockoutBroker(cash=1000.0, commission_fixed=1.0)
    cerebro.addstrategy(DQNEnsembleStrategy, registry=str(tmp / "models"), oos_only=False, use_gate=False,
                        spread=0.01, ratio=0.01, stop=0.71)
    cerebro.addanalyzer(KnockoutTrades, _name="t")
    strat = cerebro.run()[0]
    trades = strat.analyzers.t.to_frame()
    assert len(trades) >= 10
    costs = TradeCosts(ratio=0.01, spread=0.01, fee=1.0, stop=0.71)
    cash = 1000.0
    for _, tr in trades.iterrows():
        day = pd.Timestamp(tr["entry_time"]).normalize().tz_localize(None)
        t = daily.index.get_loc(day)
        row = strat.table.loc[day]
        d, dist = int(row["direction"]), float(row["distance"])
        assert tr["direction"] == {1: "long", -1: "short"}[d]
        ref = daily["close"].iloc[t - 1]                 # decided at the previous close
        assert tr["barrier"] == pytest.approx(float(P.barrier_from_distance(ref, d, dist)))
        bar = daily.iloc[t:t + 1]
        e, x, r = trade_outcomes(np.array([d]), np.array([dist]), bar["open"].iloc[0], bar["open"], bar["high"],
                                 bar["low"], bar["close"], costs, barrier_ref=ref)
        assert tr["entry_price"] == pytest.approx(e[0])
        assert tr["exit_price"] == pytest.approx(x[0])
        assert tr["exit_reason"] == REASONS[int(r[0])]
        assert tr["size"] == int((cash - 1.0) / e[0])
        cash += tr["pnl"]
    # the vectorised session simulation with the previous close as barrier reference agrees too
    from mltrade.models.baselines import decisions_result

    days = pd.DatetimeIndex(pd.to_datetime(trades["entry_time"])).normalize().tz_localize(None)
    dirs = pd.Series(0, index=daily.index)
    dirs[days] = strat.table.loc[days, "direction"]
    _, sim = decisions_result(daily, dirs.to_numpy(), strat.table["distance"].reindex(daily.index).fillna(0).to_numpy(),
                              TradeCosts(ratio=0.01, spread=0.01, fee=1.0, stop=0.71, budget=1000.0,
                                         barrier_reference="previous_close"))
    assert np.allclose(sim.loc[days, "entry"], trades["entry_price"])
    assert np.allclose(sim.loc[days, "exit"], trades["exit_price"])
    assert np.allclose(sim.loc[days, "size"], trades["size"])


@pytest.mark.slow
def test_night_session_broker_fills_match_the_session_simulation(trained):
    """Night: bought at the close, sold at the next open; the broker agrees with decisions_result."""
    import backtrader as bt

    from mltrade.analyzers import KnockoutTrades
    from mltrade.brokers import KnockoutBroker
    from mltrade.feeds.bars import IndexData
    from mltrade.feeds.sample import load_daily
    from mltrade.models.baselines import TradeCosts, decisions_result
    from mltrade.strategies.dqn import DQNEnsembleStrategy

    tmp, _ = trained
    daily = load_daily("2013-06-01", "2014-03-31")
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(IndexData(dataframe=daily, exchange="XNAS", interval=None))
    cerebro.broker = KnockoutBroker(cash=1000.0, commission_fixed=1.0)
    cerebro.addstrategy(DQNEnsembleStrategy, registry=str(tmp / "models"), session="night", oos_only=False,
                        use_gate=False, spread=0.01, ratio=0.01, stop=0.71)
    cerebro.addanalyzer(KnockoutTrades, _name="t")
    strat = cerebro.run()[0]
    trades = strat.analyzers.t.to_frame()
    assert len(trades) >= 10
    entry_days = pd.DatetimeIndex(pd.to_datetime(trades["entry_time"])).normalize().tz_localize(None)
    exit_days = pd.DatetimeIndex(pd.to_datetime(trades["exit_time"])).normalize().tz_localize(None)
    pos = daily.index.get_indexer(exit_days)
    assert (daily.index.get_indexer(entry_days) == pos - 1).all()        # held overnight only
    dirs = pd.Series(0, index=daily.index)
    dirs[exit_days] = strat.table.loc[exit_days, "direction"].to_numpy()
    _, sim = decisions_result(daily, dirs.to_numpy(), strat.table["distance"].reindex(daily.index).fillna(0).to_numpy(),
                              TradeCosts(ratio=0.01, spread=0.01, fee=1.0, stop=0.71, budget=1000.0), "night")
    assert np.allclose(sim.loc[exit_days, "entry"], trades["entry_price"])
    assert np.allclose(sim.loc[exit_days, "exit"], trades["exit_price"])
    assert np.allclose(sim.loc[exit_days, "size"], trades["size"])
