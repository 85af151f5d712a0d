"""Ensemble vote and tie rules, deviation math and store, confidence and drawdown gates."""
import numpy as np
import pandas as pd
import pytest

from mltrade.models.dqn.ensemble import (DeviationStore, RidgeOHLC, Scaler, agent_specs, deviation_stats,
                                         EnsembleConfig, vote)
from mltrade.models.dqn.env import action_table
from mltrade.models.dqn.gate import ConfidenceGate, drawdown_block, gate_features, technical_features

D, DIST = action_table()   # 0..8 long (distance 0.12..0.04), 9 none, 10..18 short (0.04..0.12)


def test_majority_direction_then_median_barrier_of_winning_side():
    # 5 agents: 3 long (distances 0.12, 0.08, 0.04), 1 short, 1 none
    acts = np.array([[0], [4], [8], [12], [9]])
    v = vote(acts, D, DIST)
    assert v.direction[0] == 1
    assert v.distance[0] == pytest.approx(np.median([0.12, 0.08, 0.04]))
    assert v.agreement[0] == pytest.approx(3 / 5)
    assert v.counts[0].tolist() == [3, 1, 1]
    # short majority with an even number of short votes: median of the two middle distances
    acts = np.array([[10], [11], [13], [18], [0], [9]])
    v = vote(acts, D, DIST)
    assert v.direction[0] == -1
    assert v.distance[0] == pytest.approx(np.median(DIST[[10, 11, 13, 18]]))


@pytest.mark.parametrize("acts", [
    [[0], [1], [10], [11]],          # long 2 = short 2
    [[0], [9], [10], [3], [9], [12]],  # long 2 = none 2 = short 2
    [[0], [9], [9], [2]],            # long 2 = none 2
])
def test_ties_mean_no_trade(acts):
    v = vote(np.array(acts), D, DIST)
    assert v.direction[0] == 0 and v.distance[0] == 0


def test_majority_for_no_trade_is_no_trade_and_vectorised_over_sessions():
    acts = np.array([[9, 0, 10], [9, 1, 10], [3, 2, 0]])
    v = vote(acts, D, DIST)
    assert v.direction.tolist() == [0, 1, -1]
    assert v.frame().shape == (3, 7)


def test_session_barrier_is_the_votes_distance_else_the_trading_agents_median():
    """The ensemble's barrier of a session (what its baselines and learner ladder trade): the vote's
    distance where it trades; where the vote is no trade, the median distance of the agents that trade."""
    acts = np.array([[9, 0, 9], [9, 2, 9], [3, 1, 9], [5, 11, 9], [9, 0, 9]])
    v = vote(acts, D, DIST)
    assert v.direction.tolist() == [0, 1, 0]
    assert v.barrier[0] == pytest.approx(np.median([DIST[3], DIST[5]]))   # no-trade majority
    assert v.barrier[1] == v.distance[1] == pytest.approx(np.median([DIST[0], DIST[2], DIST[1], DIST[0]]))
    assert np.isnan(v.barrier[2])                                          # no agent trades
    assert v.frame()["session_distance"].iloc[0] == pytest.approx(v.barrier[0])


def test_deviation_mean_standard_error_and_z():
    rng = np.random.default_rng(0)
    pred = rng.normal(100, 2, size=(10, 6, 4))
    actual = rng.normal(100, 2, size=(6, 4))
    s = deviation_stats(pred, actual)
    for t in range(6):
        for k in range(4):
            x = pred[:, t, k]
            se = np.sqrt(((x - x.mean()) ** 2).sum() / 9) / np.sqrt(10)
            assert s["mean"][t, k] == pytest.approx(x.mean())
            assert s["se"][t, k] == pytest.approx(se)
            assert s["z"][t, k] == pytest.approx((actual[t, k] - x.mean()) / se)
    same = np.ones((3, 2, 4))
    assert np.all(deviation_stats(same, np.full((2, 4), 5.0))["z"] == 0)   # se == 0 -> 0
    with pytest.raises(ValueError, match="at least 2"):
        deviation_stats(pred[:1], actual)


def test_deviation_store_merges_atomically_and_shifts_to_next_day(tmp_path):
    idx = pd.bdate_range("2020-01-01", periods=4)
    rng = np.random.default_rng(1)
    stats = deviation_stats(rng.normal(size=(5, 4, 4)), rng.normal(size=(4, 4)))
    store = DeviationStore(tmp_path / "dev" / "deviations.parquet")
    assert store.load().empty
    frame = DeviationStore.frame(idx, stats)
    store.update(frame.iloc[:3])
    newer = frame.iloc[2:].copy()
    newer["z_close"] = 99.0
    out = store.update(newer)
    assert list(out.index) == list(idx) and out["z_close"].iloc[2] == 99.0
    assert [p.name for p in (tmp_path / "dev").iterdir()] == ["deviations.parquet"]
    nxt = DeviationStore.next_day_features(store.load())
    assert np.isnan(nxt["dev_z_close"].iloc[0])
    assert nxt["dev_z_close"].iloc[3] == 99.0 and nxt["dev_z_open"].iloc[1] == frame["z_open"].iloc[0]


def test_ridge_scaler_and_agent_specs_are_diverse():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 3))
    Y = X @ np.array([[1.0], [2.0], [0.0]]) + 0.5
    r = RidgeOHLC.fit(X, Y, alpha=1e-6)
    assert np.allclose(r.predict(X), Y, atol=1e-4)
    assert np.allclose(RidgeOHLC.from_dict(r.to_dict()).predict(X), r.predict(X))
    Xb = np.c_[X, rng.integers(0, 2, 200)]
    sc = Scaler.fit(Xb)
    z = sc.transform(Xb)
    assert np.allclose(z[:, :3].mean(0), 0, atol=1e-6) and set(np.unique(z[:, 3])) <= {0.0, 1.0}
    specs = agent_specs(EnsembleConfig(seed=3), 10, 1000)
    assert len({s["seed"] for s in specs}) == 10
    assert len({tuple(s["hidden"]) for s in specs}) > 1
    assert len({tuple(s["window"]) for s in specs}) == 10
    assert all(0 <= s["window"][0] < s["window"][1] <= 1000 and s["window"][1] - s["window"][0] >= 600
               for s in specs)


def _daily(n=80, seed=0):
    rng = np.random.default_rng(seed)
    c = 1000 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    return pd.DataFrame({"open": c, "high": c * 1.01, "low": c * 0.99, "close": c},
                        index=pd.bdate_range("2020-01-01", periods=n))


def test_technical_and_gate_features_use_only_earlier_sessions():
    daily = _daily()
    f1 = technical_features(daily)
    changed = daily.copy()
    changed.iloc[50] *= 1.3
    f2 = technical_features(changed)
    pd.testing.assert_frame_equal(f1.iloc[:51], f2.iloc[:51])
    assert not f1.iloc[51].equals(f2.iloc[51])
    votes = pd.DataFrame({"direction": 1, "distance": 0.04, "agreement": 0.6, "n_long": 6, "n_none": 2,
                          "n_short": 2}, index=daily.index)
    shadow = np.linspace(-0.1, 0.1, len(daily))
    feats = gate_features(votes, np.zeros((10, len(daily))), shadow, -shadow, daily, perf_window=3)
    assert feats["perf_strategy"].iloc[10] == pytest.approx(shadow[7:10].mean())
    assert feats["perf_opposite"].iloc[10] == pytest.approx(-shadow[7:10].mean())
    assert feats["share_long"].iloc[0] == pytest.approx(0.6)
    assert np.isfinite(feats.to_numpy()).all()


def test_gate_threshold_chosen_on_given_scores_and_no_gate_kept_when_nothing_helps():
    rng = np.random.default_rng(3)
    X = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    y = (X["a"] + 0.3 * rng.normal(size=300) > 0).astype(int).to_numpy()
    gate = ConfidenceGate.fit(X, y)
    p = gate.proba(X)
    assert ((p > 0.5) == y).mean() > 0.8
    ret = np.where(y == 1, 0.05, -0.05)
    info = gate.choose_threshold(p, lambda m: float(ret[m].sum()), min_trades=5)
    assert info["threshold"] > 0 and info["score"] > ret.sum()
    assert (gate.allows(X) == (p >= info["threshold"])).all()
    back = ConfidenceGate.from_dict(gate.to_dict())
    assert np.allclose(back.proba(X), p) and back.threshold == gate.threshold
    # a score that no threshold improves keeps the gate open
    info = gate.choose_threshold(p, lambda m: float(m.sum()), min_trades=5)
    assert info["threshold"] == 0.0
    with pytest.raises(ValueError, match="missing column"):
        gate.proba(X[["a"]])


def test_drawdown_gate_blocks_after_losses_and_recovers():
    shadow = np.array([0.1, -0.5, -0.6, np.nan, 0.2, 0.3, 0.9, 0.1])
    block = drawdown_block(shadow, window=3, limit=-1.0)
    # session i is blocked when sum(shadow[i-3:i]) < -1
    expected = [np.nansum(shadow[max(0, i - 3):i]) < -1.0 for i in range(len(shadow))]
    assert block.tolist() == expected and block.any() and not block[-1]


from hypothesis import given, settings, strategies as st


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 18), min_size=1, max_size=12))
def test_vote_matches_a_plain_count(actions):
    v = vote(np.array(actions)[:, None], D, DIST)
    dirs = [int(D[a]) for a in actions]
    counts = {1: dirs.count(1), 0: dirs.count(0), -1: dirs.count(-1)}
    top = max(counts.values())
    winners = [k for k, c in counts.items() if c == top]
    want = winners[0] if len(winners) == 1 else 0
    assert v.direction[0] == want
    if want:
        assert v.distance[0] == pytest.approx(np.median([DIST[a] for a in actions if D[a] == want]))
    assert v.agreement[0] == pytest.approx(top / len(actions))


def test_default_target_network_updates_within_the_default_steps():
    from mltrade.config import load_config
    from mltrade.models.dqn.data import ensemble_config_from

    ec = ensemble_config_from(load_config()["dqn"])
    assert ec.target_model_update < 1 or ec.target_model_update < ec.steps
    with pytest.raises(ValueError, match="a hard update every 10000 steps never happens within dqn.steps = 3000"):
        EnsembleConfig(steps=3000, target_model_update=10000)
    with pytest.raises(ValueError, match="dqn.target_model_update: expected > 0"):
        EnsembleConfig(target_model_update=0)
    assert EnsembleConfig(steps=3000, target_model_update=500).target_model_update == 500


def test_incoherent_config_fails_before_training(tmp_path):
    from mltrade.config import load_config
    from mltrade.models.dqn.pipeline import train_walk_forward

    cfg = dict(load_config()["dqn"], registry=str(tmp_path), target_model_update=10000.0)
    with pytest.raises(ValueError, match="never happens within dqn.steps"):
        train_walk_forward(cfg, progress=False)
    with pytest.raises(ValueError, match="dqn.val_days: expected >= 1"):
        train_walk_forward(dict(cfg, target_model_update=0.01, val_days=0), progress=False)
    assert not any(tmp_path.iterdir())
