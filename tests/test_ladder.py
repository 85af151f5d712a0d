"""The learner ladder (mltrade.models.ladder): simple learners on the model's inputs, chosen on validation."""
import json

import numpy as np
import pytest

from mltrade.models.ladder import Ladder, LadderSplit, format_ladder, metrics


def _world(n=900, signal=1.0, seed=0):
    """Sessions whose long return is +/-1 % by the sign of a noisy feature (signal 0: pure noise)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    edge = signal * np.sign(X[:, 2]) * 0.004
    r_long = edge + rng.normal(0, 0.01, n)
    r_short = -r_long - 0.0002  # shorting costs a little more

    def returns_fn(pos, rows):
        pos = np.asarray(pos)
        return np.where(pos > 0, r_long[rows], np.where(pos < 0, r_short[rows], 0.0))

    return X, r_long, returns_fn


def test_logistic_finds_the_planted_signal_out_of_sample():
    X, r_long, fn = _world()
    split = LadderSplit.expanding(700, n_folds=2, val_size=100, holdout=np.arange(700, 900))
    lad = Ladder(X, split, fn, random_seeds=range(5), spa_reps=300)
    for name in ("always_long", "always_short", "random", "logistic", "hgb"):
        assert name in lad.rungs
    lg = lad.rungs["logistic"]
    # the sign of feature 2 decides: the logistic rung trades it on holdout sessions it never saw
    truth = np.where(X[700:, 2] > 0, 1, -1)
    assert (lg.hold_positions == truth).mean() > 0.8
    assert lg.hold["log_product"] > lad.rungs["always_long"].hold["log_product"] + 0.3
    assert lg.hold["log_product"] > lad.rungs["random"].hold["log_product"] + 0.3
    assert lad.best_simple() in ("logistic", "hgb")
    # the holdout figure is the returns of those positions, scored by metrics()
    assert lg.hold == metrics(fn(lg.hold_positions, split.holdout), lg.hold_positions)


def test_selection_uses_validation_only():
    X, r_long, fn = _world(n=400, signal=0.0, seed=3)
    split = LadderSplit.simple(np.arange(200), np.arange(200, 300), np.arange(300, 400))
    # a rule that is wrong on every validation session and right on every holdout session
    rule = np.where(r_long > -r_long - 0.0002, 1, -1)
    rule[200:300] *= -1
    lad = Ladder(X, split, fn, rule_positions=rule, random_seeds=range(3), spa_reps=200)
    r = lad.rungs["rule"]
    others = [n for n in ("always_long", "always_short", "logistic", "hgb", "no_trade")]
    assert all(r.hold["log_product"] > lad.rungs[n].hold["log_product"] for n in others)
    assert all(r.val["log_product"] < lad.rungs[n].val["log_product"] for n in others)
    best = lad.best_simple()
    assert best != "rule"
    assert lad.rungs[best].val["log_product"] == max(lad.rungs[n].val["log_product"] for n in others)
    # a hyper-parameter that wins on the holdout is not picked either: C is the validation argmax
    lg = lad.rungs["logistic"]
    assert lg.params["C"] in (0.001, 0.01, 0.1, 1.0, 10.0)


def test_model_verdict_spa_and_outputs():
    X, r_long, fn = _world(n=700, seed=1)
    split = LadderSplit.expanding(500, n_folds=1, val_size=150, holdout=np.arange(500, 700))
    lad = Ladder(X, split, fn, random_seeds=range(3), spa_reps=300)
    v = lad.verdict()
    assert v["model"] is None and "no model" in v["words"]
    # an oracle model (knows the session's sign) beats every simple learner, significantly
    oracle = lambda rows: np.where(r_long[rows] > -r_long[rows] - 0.0002, 1, -1)
    val, hold = split.validation, split.holdout
    lad.add_model("ncp", fn(oracle(val), val), fn(oracle(hold), hold), oracle(val), oracle(hold))
    v = lad.verdict()
    assert v["beats_on_validation"] is True and v["spa_pvalue_validation"] < 0.05
    assert v["words"].startswith("ncp beats the best simple learner (") and ": yes" in v["words"]
    d = json.loads(json.dumps(lad.to_dict()))
    assert set(d["rungs"]) >= {"always_long", "always_short", "random", "logistic", "hgb", "ncp"}
    assert d["rungs"]["ncp"]["holdout"]["n_sessions"] == 200
    txt = format_ladder(d)
    for name in d["rungs"]:
        assert name in txt
    assert v["words"] in txt
    # an always-long "model" does not beat always-long: no, with p = 1
    lad.add_model("flat", fn(np.ones(len(val), int), val), fn(np.ones(len(hold), int), hold))
    v2 = lad.verdict()
    assert v2["spa_pvalue_validation"] is not None
    if v2["best_simple"] == "always_long":
        assert v2["beats_on_validation"] is False and ": no" in v2["words"]


def test_no_trade_rung_is_the_floor_of_the_best_simple_learner():
    X, r_long, fn = _world(n=700, seed=2)
    split = LadderSplit.expanding(500, n_folds=1, val_size=150, holdout=np.arange(500, 700))
    lad = Ladder(X, split, fn, random_seeds=range(3), spa_reps=200)
    nt = lad.rungs["no_trade"]
    assert nt.val["log_product"] == 0.0 and nt.hold["log_product"] == 0.0 and nt.val["trades"] == 0
    assert nt.val["sharpe"] == 0.0 and nt.val["long_share"] == 0.0
    # where a learner makes money on validation it is the best simple learner, not no-trade
    assert lad.best_simple() in ("logistic", "hgb")
    assert "no_trade" in format_ladder(lad.to_dict())

    # a market where every side of every session loses (costs above any move): nothing simple makes money
    rng = np.random.default_rng(4)
    loss_l, loss_s = -0.002 - rng.uniform(0, 0.01, 700), -0.002 - rng.uniform(0, 0.01, 700)

    def losing(pos, rows):
        pos = np.asarray(pos)
        return np.where(pos > 0, loss_l[rows], np.where(pos < 0, loss_s[rows], 0.0))

    lad = Ladder(X, split, losing, random_seeds=range(3), spa_reps=200)
    assert all(lad.rungs[n].val["log_product"] < 0 for n in ("always_long", "always_short", "logistic", "hgb"))
    assert lad.best_simple() == "no_trade"
    # a model that loses less than every learner still does not beat the best simple learner: not trading
    val, hold = split.validation, split.holdout
    lad.add_model("ncp", 0.1 * losing(np.ones(len(val), int), val), 0.1 * losing(np.ones(len(hold), int), hold))
    v = lad.verdict()
    assert v["best_simple"] == "no_trade" and v["beats_on_validation"] is False
    assert "(no-trade: no simple learner makes money on validation)" in v["words"] and ": no (" in v["words"]


def test_bad_inputs_are_named():
    X, _, fn = _world(n=100)
    with pytest.raises(ValueError, match="fit rows must all come before"):
        LadderSplit.simple(np.arange(50, 60), np.arange(40, 50), np.arange(90, 100))
    with pytest.raises(ValueError, match="holdout must come after"):
        LadderSplit.simple(np.arange(50), np.arange(50, 60), np.arange(55, 70))
    with pytest.raises(ValueError, match="would fit on"):
        LadderSplit.expanding(100, n_folds=3, val_size=30, holdout=np.arange(100, 100), min_fit=50)
    split = LadderSplit.simple(np.arange(50), np.arange(50, 70), np.arange(70, 100))
    with pytest.raises(ValueError, match="2-D"):
        Ladder(X[:, 0], split, fn)
    lad = Ladder(X, split, fn, random_seeds=[0], spa_reps=100, hgb_grid=[{"max_iter": 20}])
    with pytest.raises(ValueError, match="needs 20 validation and 30 holdout"):
        lad.add_model("m", np.zeros(19), np.zeros(30))
