"""Walk-forward training end to end: registry, CLI, backtrader strategy and report (null-world edge and planted
pattern: tests/test_dqn_learning.py)."""
import json

import numpy as np
import pandas as pd
import pytest

from mltrade.config import load_config
from mltrade.models.registry import ModelRegistry
from tests.helpers import dqn_tables


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
    # ranked by validation only: the selection range ends before the holdout, which is the test range
    sel = reg.selection("dqn")
    assert sel["metric"] == "val_return" and sel["value"] == metrics["val_return"]
    assert sel["holdout_range"] == metrics["folds"][-1]["fold"]["test"]
    assert sel["selection_range"] == metrics["folds"][-1]["fold"]["val"]
    assert pd.Timestamp(sel["selection_range"][1]) < pd.Timestamp(sel["holdout_range"][0])
    assert metrics["val_return"] == pytest.approx(np.mean([metrics["val_return_day"], metrics["val_return_night"]]))
    assert metrics["degenerate"] is False and isinstance(metrics["holdout_constant"], bool)
    for s in ("day", "night"):
        settings = json.loads((path / s / "settings.json").read_text())
        assert {"degenerate", "degenerate_reason", "holdout_constant", "holdout_constant_reason"} <= set(settings)
        sig = metrics["significance"][s]
        assert set(sig["spa_pvalue"]) == {"buy_and_hold", "always_long", "no_trade"} and sig["n_sessions"] == 60
        assert sig["sharpe_ci"] is None or sig["sharpe_ci"][0] <= sig["sharpe_ci"][1]
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
    settings = json.loads((path / "day" / "settings.json").read_text())
    assert strat.model_flags == {k: settings[k] for k in ("degenerate", "degenerate_reason", "holdout_constant",
                                                          "holdout_constant_reason")}
    assert strat.model_flags["degenerate"] is False          # the registry never keeps a degenerate model
    sessions = [pd.Timestamp(d["info_session"]) for d in strat.decisions]
    assert min(sessions) > oos_start                   # only out-of-sample sessions are traded
    by_session = strat.table
    for d in strat.decisions:                          # executed decisions are the gated vote
        assert d["direction"] == by_session.loc[pd.Timestamp(d["info_session"]), "trade_direction"]
    if len(res.trades):
        assert set(res.trades["exit_reason"]) <= {"session_end", "stop", "knockout"}
    html = (res.run_dir / "report.html").read_text()
    for title in ("vote distribution", "gate decisions", "out-of-sample scope", "agreement",
                  "deviation tracking", "candidate selection overfitting",
                  "probability that the chosen trial is below the median out of sample"):
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
    from mltrade.baselines.simulation import REASONS, TradeCosts, trade_outcomes
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
    from mltrade.baselines.simulation import decisions_result

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
    from mltrade.baselines.simulation import TradeCosts, decisions_result
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


@pytest.mark.slow
def test_training_figure_is_the_backtest_figure_to_the_cent(trained):
    """One truth: `mltrade backtest --strategy dqn` on the kept model's holdout reports the holdout figure
    training reported (day and night), its always-long baseline trades the ensemble's barriers as
    training's does, and the report and summary.json reconcile them and carry the learner ladder."""
    from mltrade.backtest import run_backtest

    tmp, _ = trained
    metrics = ModelRegistry(tmp / "models").metrics("dqn")
    for session in ("day", "night"):
        fold = [f for f in metrics["folds"] if f["session"] == session][-1]
        cfg = load_config(None, {"backtest": {"end": "2014-03-31", "out": str(tmp / "reports"),
                                              "cash": 10000.0},
                                 "strategy": {"name": "dqn", "params": {"registry": str(tmp / "models"),
                                                                        "session": session}}})
        res = run_backtest(cfg, run_name=f"one-{session}", start_at_holdout=True, significance_reps=200)
        cash = 10000.0
        assert res.summary["oos_start"] == fold["fold"]["test"][0]
        assert abs(res.summary["total_return"] - fold["test"]["total_return"]) * cash < 0.005
        assert res.summary["trades"] == fold["test"]["trades"]
        assert abs(res.baselines["always_long"]["total_return"]
                   - fold["baselines"]["always_long"]["total_return"]) * cash < 0.005
        rec = res.summary["dqn"]["reconciliation"]
        assert rec["differences"] == [] and rec["training"] == fold["test"]["total_return"]
        assert abs(rec["simulation"] - rec["backtest"]) * cash < 0.005
        assert res.summary["dqn"]["ladder"]["verdict"]["model"] == f"{session} ensemble"
        saved = json.loads((res.run_dir / "summary.json").read_text())
        assert saved["dqn"]["ladder"]["rungs"].keys() == metrics["ladder"][session]["rungs"].keys()
        html = (res.run_dir / "report.html").read_text()
        assert "training figure and this backtest" in html and "learner ladder" in html


@pytest.mark.slow
def test_ladder_in_metrics_and_cli_lines(trained):
    """The ladder: every rung on the same validation (100) and holdout (60) sessions, the best simple
    learner chosen on validation, SPA p-values, and one CLI line with the verdict per session."""
    from mltrade.commands.train_dqn import report_lines
    from mltrade.models.ladder import LEARNERS

    tmp, _ = trained
    metrics = ModelRegistry(tmp / "models").metrics("dqn")
    lines = report_lines(metrics)
    for session in ("day", "night"):
        lad = metrics["ladder"][session]
        assert set(lad["rungs"]) == {"always_long", "always_short", "random", "logistic", "hgb", "no_trade",
                                     f"{session} ensemble"}
        assert lad["validation_sessions"] == 100 and lad["holdout_sessions"] == 60
        v = lad["verdict"]
        best = max((n for n in LEARNERS if n in lad["rungs"]),
                   key=lambda n: lad["rungs"][n]["validation"]["log_product"])
        assert v["best_simple"] == best
        assert 0 <= v["spa_pvalue_validation"] <= 1 and 0 <= v["spa_pvalue_holdout"] <= 1
        assert {r["holdout"]["n_sessions"] for r in lad["rungs"].values()} == {60}
        verdict = [ln for ln in lines if ln.startswith(f"{session} ensemble beats the best simple learner")]
        assert len(verdict) == 1 and (": yes (" in verdict[0]) == v["beats_on_validation"]


@pytest.mark.slow
def test_candidate_selection_pbo_in_metrics_and_cli_line(trained):
    """Each fold and session kind: the PBO of choosing agents among the candidates on validation (2
    candidates over the fold's 100 validation sessions), in metrics.json and one CLI line per session."""
    from mltrade.commands.train_dqn import report_lines

    tmp, _ = trained
    metrics = ModelRegistry(tmp / "models").metrics("dqn")
    lines = report_lines(metrics)
    for session in ("day", "night"):
        per_fold = [m for m in metrics["folds"] if m["session"] == session]
        sel = metrics["selection_pbo"][session]
        assert len(sel) == len(per_fold) >= 1
        for m, s in zip(per_fold, sel):
            assert s["fold"] == m["fold"]["fold"] and s["trials"] == len(m["validation_agent_returns"]) == 2
            assert s["sessions"] == 100 and 0.0 <= s["pbo"] <= 1.0
            assert m["selection_pbo"]["pbo"] == s["pbo"]
        line = [ln for ln in lines if ln.startswith(f"{session} candidate selection")]
        assert len(line) == 1 and f"fold {sel[0]['fold']}: {sel[0]['pbo']:.2f}" in line[0]
