"""Policies and replay memory: statistics, annealing, windows."""
import numpy as np
import pytest

from mltrade.models.dqn.memory import SequentialMemory
from mltrade.models.dqn.policy import (BoltzmannQPolicy, EpsGreedyQPolicy, GreedyQPolicy, LinearAnnealedPolicy,
                                       policy_from_dict)


class _Agent:
    def __init__(self, step=0, training=True):
        self.step, self.training = step, training


def test_boltzmann_frequencies_follow_softmax():
    q = np.array([1.0, 0.0, -1.0, 0.5])
    pol = BoltzmannQPolicy(tau=0.7, seed=3)
    n = 20000
    counts = np.bincount([pol.select_action(q) for _ in range(n)], minlength=4) / n
    expected = np.exp(q / 0.7) / np.exp(q / 0.7).sum()
    assert np.allclose(pol.probabilities(q), expected)
    # 4 standard errors of a binomial proportion
    assert np.all(np.abs(counts - expected) < 4 * np.sqrt(expected * (1 - expected) / n))


def test_boltzmann_clip_keeps_huge_q_finite():
    pol = BoltzmannQPolicy(tau=1e-6, clip=(-500, 500), seed=0)
    p = pol.probabilities(np.array([1e9, 0.0, -1e9]))
    assert np.isfinite(p).all() and p.argmax() == 0


def test_eps_greedy_random_rate():
    q = np.array([0.0, 5.0, 1.0])
    pol = EpsGreedyQPolicy(eps=0.3, seed=1)
    n = 20000
    acts = np.array([pol.select_action(q) for _ in range(n)])
    non_greedy = (acts != 1).mean()
    expected = 0.3 * 2 / 3
    assert abs(non_greedy - expected) < 4 * np.sqrt(expected * (1 - expected) / n)
    assert GreedyQPolicy().select_action(q) == 1


def test_linear_annealing_values_and_test_value():
    inner = EpsGreedyQPolicy(eps=0.5)
    pol = LinearAnnealedPolicy(inner, "eps", value_max=1.0, value_min=0.1, value_test=0.05, nb_steps=100)
    ag = _Agent()
    pol._set_agent(ag)
    for step, want in ((0, 1.0), (50, 0.55), (100, 0.1), (500, 0.1)):
        ag.step = step
        assert pol.get_current_value() == pytest.approx(want)
    ag.training = False
    assert pol.get_current_value() == 0.05
    pol.select_action(np.zeros(3))
    assert inner.eps == 0.05
    # round trip of the config
    back = policy_from_dict(pol.to_dict())
    assert isinstance(back.inner_policy, EpsGreedyQPolicy) and back.nb_steps == 100
    with pytest.raises(ValueError, match="no attribute 'tau'"):
        LinearAnnealedPolicy(EpsGreedyQPolicy(), "tau", 1, 0, 0, 10)


def test_memory_windows_pad_at_episode_start_and_ring_buffer():
    mem = SequentialMemory(limit=5, window_length=3, seed=0)
    for i in range(3):
        mem.append(np.array([i + 1.0]), i, float(i), np.array([i + 2.0]), i == 2)
    mem.end_episode()
    # windows: idx 0 -> [0,0,1], idx 2 -> [1,2,3]
    w = mem._window(mem._obs0, np.array([0, 1, 2]))
    assert w[:, :, 0].tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3]]
    mem.append(np.array([10.0]), 0, 0.0, np.array([11.0]), False)
    w = mem._window(mem._obs0, np.array([3]))
    assert w[0, :, 0].tolist() == [0, 0, 10]      # new episode: no history from the previous one
    for i in range(10):
        mem.append(np.array([float(i)]), 0, 0.0, np.array([float(i)]), False)
    assert len(mem) == 5
    s0, a, r, s1, t = mem.sample(7)
    assert s0.shape == (7, 3, 1) and a.shape == (7,)
    state = mem.get_recent_state(np.array([5.0]), [np.array([4.0])])
    assert state[:, 0].tolist() == [0, 4, 5]
    with pytest.raises(ValueError, match="limit"):
        SequentialMemory(0)
