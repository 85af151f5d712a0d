"""Knock-out environment: pricing through mltrade.products, stops, knock-outs, causality, check_env."""
import warnings

import numpy as np
import pandas as pd
import pytest
from gymnasium.utils.env_checker import check_env

from mltrade import products as P
from mltrade.baselines.daily import buy_and_hold
from mltrade.baselines.simulation import TradeCosts, decisions_result, trade_outcomes
from mltrade.models.dqn.env import KnockoutEnv, action_table
from mltrade.models.dqn.observations import (daily_from_intraday, intraday_observations,
                                             original_observations)


def _daily(rows, start="2021-03-01"):
    idx = pd.bdate_range(start, periods=len(rows))
    return pd.DataFrame(rows, index=idx, columns=["open", "high", "low", "close"], dtype=float)


def _flat(n=30, px=1000.0):
    return _daily([[px, px * 1.001, px * 0.999, px]] * n)


def _run_checker(env):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env, skip_render_check=True)


def test_action_table_matches_original_grid():
    d, dist = action_table()
    assert len(d) == 19 and d[9] == 0
    assert list(d[:9]) == [1] * 9 and list(d[10:]) == [-1] * 9
    assert np.allclose(1 - dist[:9], np.arange(0.88, 0.965, 0.01))
    assert np.allclose(1 + dist[10:], np.arange(1.04, 1.125, 0.01))
    with pytest.raises(ValueError, match="long_barriers"):
        action_table([1.2], [1.1])


def test_day_trade_pnl_equals_products_pricing():
    daily = _daily([[1000, 1010, 995, 1005]] * 5)
    costs = TradeCosts()
    env = KnockoutEnv(original_observations(daily).fillna(0.0), daily, mode="day", costs=costs)
    env.reset()
    _, reward, _, _, info = env.step(8)          # long, barrier 0.96 * open
    barrier = 0.96 * 1000
    entry = float(P.ask_price(1, 1000, barrier, costs.ratio, costs.fx))
    exit_ = float(P.bid_price(1, 1005, barrier, costs.ratio, costs.fx, costs.spread))
    n = int((1000 - costs.fee) / entry)
    after = 1000 + n * (exit_ - entry) - 2 * costs.fee
    assert info["size"] == n and info["exit_reason"] == "session_end"
    assert info["budget"] == pytest.approx(after)
    assert reward == pytest.approx((after / 1000 - 1) * 100)
    _, reward, _, _, info = env.step(9)          # no trade
    assert reward == 0 and info["size"] == 0


def test_stop_fills_at_stop_price_and_gap_through_barrier_knocks_out():
    costs = TradeCosts(stop=0.71)
    barrier = 960.0
    entry_px = float(P.ask_price(1, 1000, barrier, 0.01))
    # intrabar fall below the stop level, recovering by the close: sold at the stop
    e, x, r = trade_outcomes(np.array([1]), np.array([0.04]), 1000, np.array([1000.]), np.array([1001.]),
                             np.array([985.]), np.array([1000.]), costs)
    assert r[0] == 2 and x[0] == pytest.approx(0.71 * entry_px) and e[0] == pytest.approx(entry_px)
    # without a stop the same bar touching the barrier knocks out
    e, x, r = trade_outcomes(np.array([1]), np.array([0.04]), 1000, np.array([1000.]), np.array([1001.]),
                             np.array([950.]), np.array([990.]), TradeCosts(stop=0))
    assert r[0] == 3 and x[0] == 0
    # night: a gap below the barrier at the open -> knock-out, no sell fee
    daily = _daily([[1000, 1000, 1000, 1000], [950, 960, 940, 955], [955, 956, 954, 955]])
    summ, sim = decisions_result(daily, np.array([0, 1, 0]), np.array([0, 0.04, 0]), costs, session="night")
    assert sim["exit_reason"].iloc[1] == "knockout"
    n = sim["size"].iloc[1]
    assert sim["budget_after"].iloc[1] == pytest.approx(1000 - n * entry_px - costs.fee)
    # short: gap above the stop level but below the barrier -> sold at the bid at the open
    e, x, r = trade_outcomes(np.array([-1]), np.array([0.04]), 1000, np.array([1015.]), np.array([1016.]),
                             np.array([1014.]), np.array([1015.]), costs)
    assert r[0] == 2 and x[0] == pytest.approx(float(P.bid_price(-1, 1015, 1040, 0.01, 1.0, 0.01)))


def test_episode_ends_at_budget_floor_and_at_data_end():
    # steady fall: a long at 4% distance loses through its stop every day
    rows = [[1000 * 0.97 ** i, 1000 * 0.97 ** i, 1000 * 0.97 ** (i + 1), 1000 * 0.97 ** (i + 1)] for i in range(40)]
    daily = _daily(rows)
    env = KnockoutEnv(original_observations(daily), daily, costs=TradeCosts(stop=0))
    env.reset()
    steps, done = 0, False
    while not done:
        _, _, done, trunc, info = env.step(8)
        assert not trunc
        steps += 1
    assert info["budget"] < 25 and steps < len(env.obs)      # the reward ends: terminated
    env.reset()
    n = 0
    term = trunc = False
    while not (term or trunc):
        _, _, term, trunc, _ = env.step(9)
        n += 1
    assert n == len(env.obs) and trunc and not term           # the data ends: a time limit, truncated


def test_episode_length_truncates_and_agent_bootstraps_there():
    """An episode_length cut is a time limit: truncated, stored as non-terminal (the target bootstraps)."""
    from mltrade.models.dqn.memory import SequentialMemory

    rng = np.random.default_rng(0)
    c = 1000 * np.cumprod(1 + rng.normal(0, 0.001, 60))
    daily = _daily([[x, x * 1.001, x * 0.999, x] for x in c])
    env = KnockoutEnv(original_observations(daily), daily, episode_length=10)
    env.reset()
    flags = [env.step(9)[2:4] for _ in range(10)]
    assert flags[-1] == (False, True) and all(f == (False, False) for f in flags[:-1])
    from mltrade.models.dqn.agent import DQNAgent, build_q_network

    agent = DQNAgent(build_q_network(env.observation_space.shape, env.nb_actions, (4,), seed=0), env.nb_actions,
                     SequentialMemory(100), nb_steps_warmup=1000, target_model_update=0.1, seed=0)
    agent.compile()
    agent.fit(env, 25)
    assert len(agent.history["episode_reward"]) == 2              # two cuts at 10 steps
    assert agent.memory._term[:25].sum() == 0                      # no cut stored as terminal


def test_original_observations_are_causal():
    rng = np.random.default_rng(0)
    c = 1000 * np.exp(np.cumsum(rng.normal(0, 0.01, 60)))
    daily = _daily(np.c_[c, c * 1.01, c * 0.99, c])
    obs = original_observations(daily)
    assert obs.shape[1] == 44
    assert obs.iloc[:2, :8].isna().all().all() and obs.iloc[2:].notna().all().all()
    changed = daily.copy()
    changed.iloc[30] = changed.iloc[30] * 1.5          # session 30's own bar must not enter row 30
    obs2 = original_observations(changed)
    pd.testing.assert_frame_equal(obs.iloc[:31], obs2.iloc[:31])
    assert not obs.iloc[31].equals(obs2.iloc[31])
    # one-hot weekday and day of month of the session itself
    row = obs.iloc[5]
    assert row[[f"wd_{i}" for i in range(5)]].sum() == 1 and row[f"dom_{daily.index[5].day}"] == 1


@pytest.mark.parametrize("mode", ["day", "night"])
def test_check_env_daily_modes(mode):
    rng = np.random.default_rng(1)
    c = 1000 * np.exp(np.cumsum(rng.normal(0, 0.01, 40)))
    daily = _daily(np.c_[c, c * 1.01, c * 0.99, c])
    env = KnockoutEnv(original_observations(daily), daily, mode=mode)
    _run_checker(env)
    assert env.observation_space.shape == (44,) and env.action_space.n == 19


def test_intraday_mode_and_check_env():
    idx = pd.date_range("2021-03-01 09:30", periods=78, freq="5min", tz="America/New_York")
    days = [idx + pd.Timedelta(days=k) for k in (0, 1, 2, 3, 4)]
    rng = np.random.default_rng(2)
    frames = []
    for d in days:
        c = 1000 * np.exp(np.cumsum(rng.normal(0, 0.001, len(d))))
        frames.append(pd.DataFrame({"open": c, "high": c * 1.0005, "low": c * 0.9995, "close": c}, index=d))
    intr = pd.concat(frames)
    daily = daily_from_intraday(intr)
    env = KnockoutEnv(original_observations(daily), mode="intraday", intraday=intr, n_candles=17)
    _run_checker(env)
    assert env.obs.shape == (3, 44 + 3 * 17)             # first two sessions lack history
    first = intraday_observations(intr, 17)
    assert first.shape == (5, 51)
    # entry of session 2 is the open of its 18th bar, priced with products
    sess = intr[intr.index.normalize().tz_localize(None) == env.index[0]]
    entry_u = sess["open"].iloc[17]
    assert env.entry[0, 8] == pytest.approx(float(P.ask_price(1, entry_u, 0.96 * entry_u, 0.01)))
    with pytest.raises(ValueError, match="intraday bars"):
        KnockoutEnv(original_observations(daily), mode="intraday")


def test_buy_and_hold_and_bad_inputs():
    daily = _daily([[100, 101, 99, 100], [100, 111, 99, 110]])
    assert buy_and_hold(daily)["total_return"] == pytest.approx(0.10)
    with pytest.raises(ValueError, match="missing column"):
        original_observations(daily.drop(columns="low"))
    with pytest.raises(ValueError, match="stop"):
        TradeCosts(stop=1.5)
    with pytest.raises(ValueError, match="mode"):
        KnockoutEnv(original_observations(daily), daily, mode="weekly")


def test_custom_feature_observations_are_validated_and_aligned():
    from mltrade.models.dqn.observations import build_observations

    daily = _flat(10)
    feats = pd.DataFrame({"a": np.arange(10.0), "b": np.r_[np.inf, np.ones(9)]}, index=daily.index)
    obs = build_observations(daily, "custom", feats.iloc[::-1])
    assert list(obs.index) == list(daily.index) and np.isnan(obs["b"].iloc[0])
    env = KnockoutEnv(obs, daily)
    assert env.observation_space.shape == (2,) and len(env.obs) == 9      # the inf row is dropped
    with pytest.raises(ValueError, match=r"\['c'\] are not numeric"):
        build_observations(daily, "custom", feats.assign(c="x"))
    with pytest.raises(ValueError, match="needs a features DataFrame"):
        build_observations(daily, "custom")
    with pytest.raises(ValueError, match="expected 'original'"):
        build_observations(daily, "weird")


from hypothesis import given, settings, strategies as st


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.sampled_from([1, -1]), dist=st.floats(0.01, 0.12),
       stop=st.sampled_from([0.0, 0.71, 0.9]), n=st.integers(1, 20))
def test_trade_outcomes_invariants(seed, d, dist, stop, n):
    rng = np.random.default_rng(seed)
    c = 1000 * np.exp(np.cumsum(rng.normal(0, 0.02, n + 1)))
    o, cl = c[:-1], c[1:]
    h = np.maximum(o, cl) * (1 + np.abs(rng.normal(0, 0.01, n)))
    lo = np.minimum(o, cl) * (1 - np.abs(rng.normal(0, 0.01, n)))
    costs = TradeCosts(stop=stop)
    e, x, r = trade_outcomes(np.array([d]), np.array([dist]), o[0], o, h, lo, cl, costs)
    barrier = o[0] * (1 - d * dist)
    assert e[0] == pytest.approx(float(P.ask_price(d, o[0], barrier, 0.01)))
    touched = bool(P.is_knocked_out(d, lo, h, barrier).any())
    if r[0] == 1:
        assert x[0] == pytest.approx(float(P.bid_price(d, cl[-1], barrier, 0.01, 1.0, 0.01)))
        assert not touched
    elif r[0] == 2:
        assert stop > 0 and 0 <= x[0] <= stop * e[0] + 1e-9
    else:
        assert r[0] == 3 and x[0] == 0 and touched
