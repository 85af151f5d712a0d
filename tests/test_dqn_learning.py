"""The DQN ensemble learns a planted daily pattern out of sample, and its edge in a null world is luck.

Null world: daily OHLC cut from a driftless Brownian motion with day-to-day volatility (no pattern);
planted world: the same with each session drifting in the direction of the previous session's body with
probability 0.85. Small ensembles (3 agents, 1000 steps) on one chronological fold.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from mltrade.config import load_config
from mltrade.models.dqn.synthetic import brownian_daily, planted_daily
from mltrade.significance import spa_pvalue

N, TRAIN, VAL, TEST, EMBARGO = 900, 450, 150, 290, 2


def _train(daily, tmp_path):
    from mltrade.models.dqn.observations import build_observations
    from mltrade.models.dqn.fold import train_session_fold
    from mltrade.models.walkforward import walk_forward_folds

    cfg = dict(load_config()["dqn"])
    cfg.update(registry=str(tmp_path / "models"), agents=3, candidates=3, steps=1000, train_days=TRAIN,
               val_days=VAL, test_days=TEST, embargo=EMBARGO, sessions=["day"], episode_length=100)
    fold = walk_forward_folds(daily.index, 1, TRAIN, VAL, TEST, EMBARGO)[0]
    res = train_session_fold(cfg, daily, build_observations(daily), fold, "day", progress=False,
                             log=lambda m: None)
    return res, daily.iloc[fold.test]


def test_worlds_are_what_they_claim():
    null, planted = brownian_daily(3000, seed=5), planted_daily(3000, seed=5)
    for d in (null, planted):
        assert (d["high"] >= d[["open", "close"]].max(axis=1)).all()
        assert (d["low"] <= d[["open", "close"]].min(axis=1)).all()
    same = lambda d: float((np.sign(d["close"] - d["open"]).diff().iloc[1:] == 0).mean())   # noqa: E731
    assert abs(same(null) - 0.5) < 0.03                      # no persistence of the body's sign
    assert 0.70 < same(planted) < 0.78                       # 0.85 * 0.84 + 0.15 * 0.16 = 0.74
    r = np.log(null["close"]).diff().dropna().to_numpy()
    assert abs(np.corrcoef(r[1:], r[:-1])[0, 1]) < 0.05       # no autocorrelation of daily returns
    assert brownian_daily(50, seed=1).equals(brownian_daily(50, seed=1))


@pytest.mark.slow
def test_planted_pattern_is_learnt_out_of_sample(tmp_path):
    res, test = _train(planted_daily(N, seed=3), tmp_path)
    d = res.decisions["direction"].to_numpy()
    body = np.sign((test["close"] - test["open"]).to_numpy())
    voted = d != 0
    assert voted.sum() >= 150, f"only {voted.sum()} of {len(d)} test sessions voted a trade"
    hits = int((d[voted] == body[voted]).sum())
    assert hits / voted.sum() > 0.6, f"out-of-sample hit rate {hits}/{voted.sum()}"
    assert binomtest(hits, int(voted.sum()), 0.5, alternative="greater").pvalue < 1e-4
    r = np.asarray(res.metrics["test_session_returns"])
    assert spa_pvalue(r, np.zeros(len(r))) < 0.05             # beats no trade beyond luck
    assert res.metrics["degenerate_reason"] == "" and res.metrics["holdout_constant_reason"] == ""


@pytest.mark.slow
def test_null_world_edge_is_luck(tmp_path):
    res, test = _train(brownian_daily(N, seed=2), tmp_path)
    r = np.asarray(res.metrics["test_session_returns"])
    traded = int((res.decisions["trade_direction"] != 0).sum())
    assert traded >= 20, "the ensemble must trade for the test to say anything"
    bh = np.asarray(res.metrics["buy_and_hold_session_returns"])
    p_none, p_bh = spa_pvalue(r, np.zeros(len(r))), spa_pvalue(r, bh)
    assert p_none > 0.05 and p_bh > 0.05, f"null world: SPA p vs no trade {p_none}, vs buy-and-hold {p_bh}"
    m = res.metrics
    assert set(m["baselines"]) == {"buy_and_hold", "always_long", "random_direction"}
    assert m["fold"]["test"][0] == str(test.index[0].date()) and len(r) == len(bh) == TEST
    assert len(res.ensemble) == 3 and sum(s["kept"] for s in res.ensemble.specs) == 3
