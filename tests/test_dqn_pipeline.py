"""Walk-forward training end to end: random-walk edge, registry, CLI, backtrader strategy and report."""
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mltrade.config import load_config
from mltrade.models.registry import ModelRegistry


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
    assert m["fold"]["test"][0] == str(daily.index[fold.test_start])
    assert len(res.ensemble) == 3 and sum(s["kept"] for s in res.ensemble.specs) == 3


@pytest.mark.slow
def test_cli_trains_into_registry_and_backtest_trades_out_of_sample(tmp_path, monkeypatch):
    from mltrade.backtest import run_backtest
    from mltrade.cli import main

    cfg_file = tmp_path / "dqn.toml"
    cfg_file.write_text(
        "[dqn]\nstart = \"2012-01-01\"\nend = \"2014-03-31\"\ntrain_days = 300\nval_days = 100\n"
        "test_days = 60\nembargo = 2\ncandidates = 2\nepisode_length = 100\n"
        f"registry = \"{tmp_path / 'models'}\"\n")
    rc = main(["train", "dqn", "--config", str(cfg_file), "--agents", "2", "--steps", "300",
               "--sessions", "day", "--quiet"])
    assert rc == 0
    reg = ModelRegistry(tmp_path / "models")
    path = reg.path("dqn")
    assert path is not None and (path / "day" / "ensemble.json").exists()
    metrics = reg.metrics("dqn")
    assert "oos_return" in metrics and metrics["folds"][0]["baselines"]["buy_and_hold"]["sessions"] == 60
    settings = json.loads((path / "day" / "settings.json").read_text())
    oos_start = pd.Timestamp(settings["val_end"])
    # a second, worse-or-equal offer is not kept: the same run again with the same seed is not better
    rc = main(["train", "dqn", "--config", str(cfg_file), "--agents", "2", "--steps", "300",
               "--sessions", "day", "--quiet"])
    assert reg.path("dqn") == path and reg.history("dqn")[-1]["kept"] is False

    cfg = load_config(None, {"backtest": {"start": "2014-01-02", "end": "2014-02-28",
                                          "out": str(tmp_path / "reports"), "baselines": False},
                             "strategy": {"name": "dqn", "params": {"registry": str(tmp_path / "models")}}})
    res = run_backtest(cfg, run_name="dqn")
    strat = res.strategy
    assert strat.table is not None and len(strat.decisions) > 0
    # decisions only for sessions after the validation range (out-of-sample)
    sessions = [pd.Timestamp(d["info_session"]) for d in strat.decisions]
    assert min(sessions) > oos_start
    if len(res.trades):
        assert set(res.trades["exit_reason"]) <= {"session_end", "stop", "knockout"}
    html = (res.run_dir / "report.html").read_text()
    for title in ("vote distribution", "gate decisions", "baselines on the same sessions", "agreement"):
        assert title in html
