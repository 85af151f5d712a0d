"""Vectorised DQN training: the vector env equals KnockoutEnv, keras-rl2 step semantics, it learns."""
import numpy as np
import pandas as pd
import pytest

keras = pytest.importorskip("keras")

from mltrade.baselines.simulation import TradeCosts
from mltrade.models.dqn.agent import DQNAgent, build_q_network
from mltrade.models.dqn.env import KnockoutEnv
from mltrade.models.dqn.memory import SequentialMemory
from mltrade.models.dqn.policy import BoltzmannQPolicy, EpsGreedyQPolicy, GreedyQPolicy, LinearAnnealedPolicy
from mltrade.models.dqn.vector import VectorKnockoutEnv, fit_vector, select_actions


def _planted(n=300, seed=0, floor=25.0):
    """Sessions move +-1 % open to close; the observation tells the direction (a planted signal)."""
    rng = np.random.default_rng(seed)
    d = rng.choice([-1.0, 1.0], n)
    o = 10000 * np.cumprod(1 + 0.002 * rng.standard_normal(n))
    c = o * (1 + 0.01 * d)
    daily = pd.DataFrame({"open": o, "high": np.maximum(o, c), "low": np.minimum(o, c), "close": c},
                         index=pd.bdate_range("2015-01-01", periods=n))
    obs = pd.DataFrame({"signal": d, "noise": rng.standard_normal(n)}, index=daily.index)
    return daily, obs, TradeCosts(floor=floor)


def test_vector_env_equals_the_gym_env_step_for_step():
    daily, obs, costs = _planted(120, seed=1, floor=900.0)  # a high floor: episodes end early too
    env = KnockoutEnv(obs, daily, mode="day", costs=costs, reward_scale=1.0)
    venv = VectorKnockoutEnv(KnockoutEnv(obs, daily, mode="day", costs=costs, reward_scale=1.0), 1)
    rng = np.random.default_rng(2)
    o1, _ = env.reset()
    o2 = venv.reset()[0]
    ends = 0
    for a in rng.integers(0, env.nb_actions, 400):
        assert np.array_equal(o1, o2)
        nxt, r, term, _, _ = env.step(int(a))
        nxt2, r2, term2, obs2 = venv.step(np.array([a]))
        assert r2[0] == pytest.approx(r, rel=1e-6, abs=1e-9)
        assert bool(term2[0]) == term
        assert np.array_equal(nxt, nxt2[0])
        if term:
            ends += 1
            o1, _ = env.reset()
        else:
            o1 = nxt
        o2 = obs2[0]
    assert ends >= 2
    with pytest.raises(ValueError, match="actions: expected 1 actions"):
        venv.step(np.array([0, 1]))


def test_vector_copies_run_independent_random_episodes():
    daily, obs, costs = _planted(200, seed=3)
    env = KnockoutEnv(obs, daily, mode="day", costs=costs, random_start=True, episode_length=20)
    venv = VectorKnockoutEnv(env, 6, seed=0)
    venv.reset()
    starts = venv.t.copy()
    assert len(set(starts.tolist())) > 1
    assert (venv.t_end - venv.t == 20).all()
    for _ in range(20):
        *_, term, _ = venv.step(np.full(6, env.no_trade_action))
    assert term.all()  # every copy's episode ended after 20 sessions, then was reset


def test_batched_policies_follow_their_distributions():
    q = np.tile(np.array([[0.0, 1.0, 2.0]]), (20000, 1))
    p = BoltzmannQPolicy(tau=1.0, seed=0)
    acts = select_actions(p, q)
    want = np.exp([0.0, 1.0, 2.0]) / np.exp([0.0, 1.0, 2.0]).sum()
    assert np.allclose(np.bincount(acts, minlength=3) / len(acts), want, atol=0.015)
    assert (select_actions(GreedyQPolicy(), q) == 2).all()
    e = select_actions(EpsGreedyQPolicy(eps=0.3, seed=1), q)
    assert (e != 2).mean() == pytest.approx(0.2, abs=0.02)  # 30 % random, a third of those pick 2


def _agent(env, seed=1, **kw):
    keras.utils.set_random_seed(seed)
    model = build_q_network(env.observation_space.shape, env.nb_actions, (32,), seed=seed)
    params = dict(gamma=0.0, nb_steps_warmup=100, train_interval=4, target_model_update=500,
                  delta_clip=1.0, enable_double_dqn=True, enable_dueling_network=True, seed=seed)
    params.update(kw)
    agent = DQNAgent(model, env.nb_actions, SequentialMemory(20000, 1),
                     policy=LinearAnnealedPolicy(BoltzmannQPolicy(), "tau", 1.0, 0.05, 0.05, 3000), **params)
    agent.compile(keras.optimizers.Adam(learning_rate=3e-3))
    return agent


def test_keras_rl2_step_semantics_are_kept():
    daily, obs, costs = _planted(150, seed=4)
    env = KnockoutEnv(obs, daily, mode="day", costs=costs, reward_scale=1.0, random_start=True,
                      episode_length=50)
    agent = _agent(env)
    fit_vector(agent, env, 1000, n_envs=7)  # 1000 is not a multiple of 7: the last vector step is partial
    assert agent.step == 1000
    assert len(agent.history["loss"]) == (1000 - 100) // 4      # one update per train_interval steps
    assert len(agent.memory) == 1000
    # a hard target update at step 1000 (a multiple of 500) leaves target == online weights
    for a, b in zip(agent.model.get_weights(), agent.target_model.get_weights()):
        assert np.array_equal(a, b)
    assert len(agent.history["episode_reward"]) >= 1000 // 50 - 7
    with pytest.raises(ValueError, match="window_length must be 1"):
        a2 = DQNAgent(build_q_network(env.observation_space.shape, env.nb_actions, (8,), window_length=2),
                      env.nb_actions, SequentialMemory(100, 2))
        a2.compile()
        fit_vector(a2, env, 10)


def test_vector_training_learns_a_planted_signal_out_of_sample():
    daily, obs, costs = _planted(400, seed=5)
    train = KnockoutEnv(obs, daily, mode="day", costs=costs, reward_scale=1.0, end=daily.index[299],
                        random_start=True, episode_length=50)
    test = KnockoutEnv(obs, daily, mode="day", costs=costs, reward_scale=1.0, start=daily.index[300])
    agent = _agent(train, seed=2)
    fit_vector(agent, train, 4000, n_envs=16)
    greedy = agent.compute_batch_q_values(test.obs[:, None, :]).argmax(axis=1)
    direction = np.sign(test.directions[greedy])
    hit = (direction == test.obs[:, 0]).mean()
    assert hit >= 0.9, hit  # unseen sessions: long on +1, short on -1


def _train(n_envs, seed=5):
    from mltrade.models.dqn.ensemble import EnsembleConfig, train_agent

    daily, obs, costs = _planted(240, seed=6)
    cfg = EnsembleConfig(steps=400, nb_steps_warmup=50, episode_length=50, n_envs=n_envs, learning_rate=3e-3)
    spec = {"seed": seed, "hidden": [16], "ridge_alpha": 1.0, "window": [0, 200]}
    agent = train_agent(spec, cfg, obs, daily, "day", costs)
    return agent, agent.compute_batch_q_values(obs.to_numpy(np.float32)[:, None, :])


@pytest.mark.slow
def test_n_envs_setting_picks_the_trainer_and_same_seed_gives_same_q_values():
    one_a, q1a = _train(1)
    one_b, q1b = _train(1)
    vec_a, q8a = _train(8)
    vec_b, q8b = _train(8)
    assert np.array_equal(q1a, q1b) and np.array_equal(q8a, q8b)      # same seed -> identical Q-values
    assert not np.allclose(q1a, q8a)                                  # a different trainer really ran
    assert not hasattr(one_a, "_train_many_fn")                       # n_envs = 1: DQNAgent.fit, unchanged
    assert hasattr(vec_a, "_train_many_fn")                           # n_envs > 1: fit_vector
    for ag in (one_a, vec_a):                                         # keras-rl2 counts either way
        assert ag.step == 400 and len(ag.history["loss"]) == 400 // 4 - 50 // 4  # steps 52, 56 .. 400
    _, q_other_seed = _train(8, seed=6)
    assert not np.allclose(q8a, q_other_seed)


@pytest.mark.parametrize("bad", [0, -2, 2.5, True])
def test_n_envs_setting_is_validated(bad):
    from mltrade.models.dqn.ensemble import EnsembleConfig

    with pytest.raises(ValueError, match="dqn.n_envs: expected an integer >= 1"):
        EnsembleConfig(n_envs=bad)
    with pytest.raises(ValueError, match="need window_length = 1"):
        EnsembleConfig(n_envs=4, window_length=2)


def test_training_device_names_what_tensorflow_sees():
    import tensorflow as tf

    from mltrade.models.dqn.vector import training_device

    line = training_device()
    assert "\n" not in line
    assert line.startswith("GPU" if tf.config.list_physical_devices("GPU") else "CPU")
