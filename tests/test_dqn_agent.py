"""DQN agent: learns a trivially learnable market, reproducible, save/load, target updates, dueling."""
import numpy as np
import pandas as pd
import pytest

keras = pytest.importorskip("keras")

from mltrade.baselines.simulation import TradeCosts
from mltrade.models.dqn.agent import DQNAgent, DuelingCombine, build_q_network
from mltrade.models.dqn.env import KnockoutEnv
from mltrade.models.dqn.memory import SequentialMemory
from mltrade.models.dqn.observations import original_observations
from mltrade.models.dqn.policy import BoltzmannQPolicy, EpsGreedyQPolicy, LinearAnnealedPolicy


def _uptrend_env(n=120):
    """Every session opens 0.5% above the last and closes 1% above its open, never dipping."""
    o = 10000 * 1.005 ** np.arange(n)
    daily = pd.DataFrame({"open": o, "high": o * 1.01, "low": o, "close": o * 1.01},
                         index=pd.bdate_range("2020-01-01", periods=n))
    obs = original_observations(daily)
    obs.iloc[:, :8] = obs.iloc[:, :8] * 100          # percent scale
    return KnockoutEnv(obs, daily, mode="day", costs=TradeCosts(), reward_scale=1.0)


def _agent(env, seed=1, steps_anneal=600, **kw):
    keras.utils.set_random_seed(seed)
    model = build_q_network(env.observation_space.shape, env.nb_actions, (32,), seed=seed)
    params = dict(gamma=0.0, nb_steps_warmup=50, train_interval=1, target_model_update=0.05, delta_clip=1.0,
                  enable_double_dqn=True, enable_dueling_network=True, dueling_type="avg", seed=seed)
    params.update(kw)
    agent = DQNAgent(model, env.nb_actions, SequentialMemory(5000, 1),
                     policy=LinearAnnealedPolicy(EpsGreedyQPolicy(), "eps", 1.0, 0.05, 0.0, steps_anneal),
                     **params)
    agent.compile(keras.optimizers.Adam(learning_rate=3e-3))
    return agent


def test_agent_learns_deterministic_uptrend():
    env = _uptrend_env()
    agent = _agent(env)
    agent.fit(env, 2000)
    q = agent.compute_batch_q_values(env.obs[:, None, :])
    greedy = np.argmax(q, axis=1)
    # best action: the long certificate with the nearest barrier (highest leverage, 0.96 * open)
    assert env.session_returns().mean(axis=0).argmax() == 8
    assert (greedy < 9).mean() >= 0.95                 # long every session
    assert (greedy == 8).mean() >= 0.6
    assert q.mean(axis=0).argmax() == 8
    assert q.mean(axis=0)[10:].max() < q.mean(axis=0)[9] < q.mean(axis=0)[8]   # short < no trade < best long
    res = agent.test(env, nb_episodes=1)
    env.reset()
    mid = 0.0
    done = False
    while not done:                                     # always the middle long barrier
        _, r, term, trunc, _ = env.step(4)
        done = term or trunc
        mid += r
    assert res["episode_reward"][0] > mid > 0


def test_training_is_reproducible_with_a_seed():
    env = _uptrend_env(60)
    qs = []
    for _ in range(2):
        agent = _agent(env, seed=7, steps_anneal=200)
        agent.fit(env, 300)
        qs.append(agent.compute_batch_q_values(env.obs[:, None, :]))
    assert np.array_equal(qs[0], qs[1])
    other = _agent(env, seed=8, steps_anneal=200)
    other.fit(env, 300)
    assert not np.array_equal(qs[0], other.compute_batch_q_values(env.obs[:, None, :]))


@pytest.mark.parametrize("dueling_type", ["max", "naive"])
def test_save_load_round_trip_identical_q_values(tmp_path, dueling_type):
    env = _uptrend_env(40)
    agent = _agent(env, seed=3, dueling_type=dueling_type, enable_double_dqn=False)
    agent.policy = BoltzmannQPolicy(tau=0.5)
    agent.policy._set_agent(agent)
    agent.fit(env, 120)
    path = tmp_path / "a" / "agent.keras"
    agent.save(path)
    assert path.exists() and path.with_suffix(".json").exists()
    back = DQNAgent.load(path)
    x = env.obs[:, None, :]
    assert np.array_equal(agent.compute_batch_q_values(x), back.compute_batch_q_values(x))
    assert back.dueling_type == dueling_type and back.step == agent.step
    assert isinstance(back.policy, BoltzmannQPolicy) and back.policy.tau == 0.5
    with pytest.raises(ValueError, match=".keras"):
        agent.save(tmp_path / "x.h5")


def test_hard_and_soft_target_updates():
    env = _uptrend_env(40)
    hard = _agent(env, seed=2, nb_steps_warmup=0, target_model_update=10)
    hard.fit(env, 10)
    for w, t in zip(hard.model.get_weights(), hard.target_model.get_weights()):
        assert np.array_equal(w, t)
    hard.fit(env, 3)                                  # trained since the last copy
    assert any(not np.array_equal(w, t) for w, t in zip(hard.model.get_weights(),
                                                          hard.target_model.get_weights()))
    soft = _agent(env, seed=2, nb_steps_warmup=0, target_model_update=0.3)
    init = [w.copy() for w in soft.target_model.get_weights()]
    soft.fit(env, 20)
    moved = [not np.array_equal(a, b) for a, b in zip(init, soft.target_model.get_weights())]
    differs = [not np.array_equal(a, b) for a, b in zip(soft.model.get_weights(),
                                                        soft.target_model.get_weights())]
    assert any(moved) and any(differs)


def test_dueling_combine_math():
    y = np.array([[2.0, 1.0, 3.0, -1.0]], np.float32)   # V=2, A=(1,3,-1)
    a = y[:, 1:]
    assert np.allclose(DuelingCombine("avg")(y), 2 + a - a.mean())
    assert np.allclose(DuelingCombine("max")(y), 2 + a - a.max())
    assert np.allclose(DuelingCombine("naive")(y), 2 + a)
    with pytest.raises(ValueError, match="dueling_type"):
        DuelingCombine("sum")


def test_bad_parameters_are_rejected():
    env = _uptrend_env(20)
    model = build_q_network((44,), 19, (8,))
    with pytest.raises(ValueError, match="nb_actions"):
        DQNAgent(model, 5, SequentialMemory(10))
    with pytest.raises(ValueError, match="target_model_update"):
        DQNAgent(model, 19, SequentialMemory(10), target_model_update=0)
    with pytest.raises(RuntimeError, match="compile"):
        DQNAgent(model, 19, SequentialMemory(10)).compute_q_values(env.obs[:1])
