"""The DQN side of the learner ladder: the ensemble's per-session barrier for its baselines, the
below-baselines warning, and session_ladder on the DQN's certificate returns (no TensorFlow needed)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mltrade.baselines.simulation import TradeCosts, decisions_result, step_budget
from mltrade.models.dqn.ladder import fixed_budget_returns, session_ladder
from mltrade.models.dqn.fold import below_baselines
from mltrade.models.dqn.simulation import session_barriers
from mltrade.models.dqn.synthetic import planted_daily
from mltrade.models.walkforward import walk_forward_folds


def test_session_barriers_fill_gaps_with_the_ranges_median_and_skip_invalid_rows():
    dec = pd.DataFrame({"session_distance": [0.05, np.nan, 0.09, 0.07, 0.11],
                        "valid": [True, True, True, True, False]})
    assert session_barriers(dec, 0.08).tolist() == pytest.approx([0.05, 0.07, 0.09, 0.07, 0.07])
    none = pd.DataFrame({"session_distance": [np.nan, np.nan]})
    assert session_barriers(none, 0.08).tolist() == [0.08, 0.08]


def test_below_baselines_names_each_baseline_beaten():
    base = {"always_long": {"total_return": 0.12}, "no_trade": {"total_return": 0.0}}
    assert below_baselines(0.2, base, "day") == ""
    why = below_baselines(-0.8823, base, "night")
    assert "night" in why and "-88.23%" in why and "always-long +12.00%" in why and "no-trade +0.00%" in why
    assert "no-trade" not in below_baselines(0.05, base, "day")


def test_fixed_budget_returns_price_each_session_with_the_start_budget():
    daily = planted_daily(40, seed=2)
    costs = TradeCosts(spread=0.01, fee=1.0, budget=10000.0, barrier_reference="previous_close")
    pos = np.resize([1, -1, 0], len(daily)).astype(float)
    dist = np.full(len(daily), 0.06)
    r = fixed_budget_returns(lambda d, a, b, c: decisions_result(d, a, b, c, "day"), daily, pos, dist, costs)
    _, sim = decisions_result(daily, pos, dist, costs, "day")
    want = [step_budget(10000.0, e, x, costs)[0] / 10000.0 - 1 for e, x in zip(sim["entry"], sim["exit"])]
    assert r == pytest.approx(want) and r[0] == 0 and (r[pos == 0] == 0).all()


@pytest.mark.slow
def test_session_ladder_finds_a_planted_signal_and_scores_the_ensemble_on_the_same_returns():
    """A planted world whose observation carries the session's body: logistic regression finds it on
    validation and the holdout; the ensemble's rung is its own decisions on the same per-session returns."""
    daily = planted_daily(480, seed=4)
    body = np.sign(daily["close"] - daily["open"]).to_numpy()
    rng = np.random.default_rng(0)
    obs = pd.DataFrame({"signal": body + rng.normal(0, 0.8, len(daily)), "noise": rng.normal(size=len(daily))},
                       index=daily.index)
    fold = walk_forward_folds(daily.index, 1, 260, 100, 116, 2)[0]
    costs = TradeCosts(spread=0.01, fee=1.0, budget=10000.0, stop=0.0, barrier_reference="previous_close")
    barrier = np.full(fold.test_stop - fold.train_start, 0.10)

    def result(d, a, b, c):
        return decisions_result(d, a, b, c, "day")
    val = pd.DataFrame({"trade_direction": np.zeros(fold.val_stop - fold.val_start, int), "distance": 0.1})
    test = pd.DataFrame({"trade_direction": np.ones(fold.test_stop - fold.test_start, int), "distance": 0.1})
    lad = session_ladder(obs, daily, fold, barrier, val, test, costs, result, spa_reps=200)
    r = lad["rungs"]
    assert set(r) == {"always_long", "always_short", "random", "logistic", "hgb", "no_trade", "ensemble"}
    assert lad["verdict"]["best_simple"] in ("logistic", "hgb")
    assert r["logistic"]["holdout"]["log_product"] > r["always_long"]["holdout"]["log_product"] + 1.0
    # the "ensemble" never trades on validation and is always long on the holdout: it is those rungs
    assert r["ensemble"]["validation"]["log_product"] == 0.0
    assert r["ensemble"]["holdout"]["log_product"] == pytest.approx(r["always_long"]["holdout"]["log_product"])
    assert lad["verdict"]["beats_on_validation"] is False
