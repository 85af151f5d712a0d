"""Vectorised DQN training: ``n_envs`` copies of a :class:`KnockoutEnv` stepped together.

:func:`fit_vector` is :meth:`DQNAgent.fit` for many environments at once, with keras-rl2's
parameter names and step semantics kept: ``agent.step`` counts *environment* steps (one per
environment per vector step), one gradient update is made for every ``train_interval``
environment steps past ``nb_steps_warmup``, a hard target update every ``target_model_update``
environment steps (soft updates after every gradient step). What changes is the batching: one
Q-network call selects the actions of all environments, and the gradient updates that fall into
one vector step run inside one compiled call. Acting therefore uses weights up to one vector step
old, as in other vectorised DQN implementations (e.g. stable-baselines3 with several envs).

:class:`VectorKnockoutEnv` steps the environments' precomputed outcome tables with numpy; with
the same actions each copy yields exactly :class:`KnockoutEnv`'s rewards (tested).
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from mltrade.models.dqn.policy import (BoltzmannQPolicy, EpsGreedyQPolicy, GreedyQPolicy,
                                       LinearAnnealedPolicy, Policy)

__all__ = ["VectorKnockoutEnv", "fit_vector", "select_actions", "training_device"]


class VectorKnockoutEnv:
    """``n_envs`` independent episodes over one :class:`KnockoutEnv`'s session table."""

    def __init__(self, env: Any, n_envs: int, seed: Optional[int] = None) -> None:
        if int(n_envs) < 1:
            raise ValueError(f"n_envs: expected >= 1, got {n_envs!r}")
        self.env = env
        self.n_envs = int(n_envs)
        self.obs = env.obs
        self.entry = np.asarray(env.entry, float)
        self.exit = np.asarray(env.exit, float)
        self.costs = env.costs
        self.reward_scale = float(env.reward_scale)
        self.nb_actions = int(env.nb_actions)
        self.rng = np.random.default_rng(seed)
        n = len(self.obs)
        self.length = int(env.episode_length or n)
        self.t = np.zeros(self.n_envs, np.int64)
        self.t_end = np.full(self.n_envs, n, np.int64)
        self.budget = np.full(self.n_envs, float(self.costs.budget))

    def _reset_rows(self, rows: np.ndarray) -> None:
        n = len(self.obs)
        if self.env.random_start:
            start = self.rng.integers(0, max(1, n - self.length + 1), size=len(rows))
        else:
            start = np.zeros(len(rows), np.int64)
        self.t[rows] = start
        self.t_end[rows] = np.minimum(n, start + self.length)
        self.budget[rows] = float(self.costs.budget)

    def reset(self) -> np.ndarray:
        """Start every environment's episode; observations ``(n_envs, obs)``."""
        self._reset_rows(np.arange(self.n_envs))
        return self.obs[self.t].copy()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Apply one action per environment.

        Returns ``(next_obs, reward, terminated, obs)``: ``next_obs`` is each transition's true next
        observation (for the replay memory); ``obs`` is what to act on next, where a terminated
        environment has already been reset to a new episode.
        """
        a = np.asarray(actions, np.int64)
        if a.shape != (self.n_envs,) or (a < 0).any() or (a >= self.nb_actions).any():
            raise ValueError(f"actions: expected {self.n_envs} actions in 0..{self.nb_actions - 1}, got {a!r}")
        c = self.costs
        before = self.budget
        e = self.entry[self.t, a]
        x = self.exit[self.t, a]
        with np.errstate(divide="ignore", invalid="ignore"):
            n = np.where(e > 0, np.floor((np.minimum(before, c.max_stake) - c.fee) / np.where(e > 0, e, 1.0)),
                         0.0)
        trade = n >= 1
        fees = c.fee * np.where(x > 0, 2.0, 1.0)
        after = np.where(trade, before + n * (x - e) - fees, before)
        reward = (after / before - 1.0) * self.reward_scale
        self.budget = after
        self.t = self.t + 1
        terminated = (self.t >= self.t_end) | (after < c.floor)
        next_obs = self.obs[np.minimum(self.t, len(self.obs) - 1)].copy()
        done = np.flatnonzero(terminated)
        if len(done):
            self._reset_rows(done)
        return next_obs, reward.astype(np.float32), terminated, self.obs[self.t].copy()


def _inverse_cdf(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    cum = np.cumsum(p, axis=1)
    u = rng.random(len(p))[:, None] * cum[:, -1:]
    return np.minimum((cum <= u).sum(axis=1), p.shape[1] - 1)


def select_actions(policy: Policy, q: np.ndarray) -> np.ndarray:
    """One action per row of ``q`` with ``policy`` (vectorised for the shipped policies)."""
    q = np.asarray(q, np.float64)
    if isinstance(policy, LinearAnnealedPolicy):
        setattr(policy.inner_policy, policy.attr, policy.get_current_value())
        return select_actions(policy.inner_policy, q)
    if isinstance(policy, GreedyQPolicy):
        return q.argmax(axis=1)
    if isinstance(policy, BoltzmannQPolicy):
        z = np.clip(q / max(policy.tau, 1e-12), policy.clip[0], policy.clip[1])
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return _inverse_cdf(e / e.sum(axis=1, keepdims=True), policy.rng)
    if isinstance(policy, EpsGreedyQPolicy):
        explore = policy.rng.random(len(q)) < policy.eps
        rand = policy.rng.integers(0, q.shape[1], len(q))
        return np.where(explore, rand, q.argmax(axis=1))
    return np.array([policy.select_action(row) for row in q], np.int64)


def _train_many(agent: Any) -> Any:
    """A compiled call running ``k`` of the agent's train steps on stacked batches."""
    fn = getattr(agent, "_train_many_fn", None)
    if fn is not None:
        return fn
    step = agent._train_step
    x = [None, None] + list(agent.model.inputs[0].shape[1:])
    v = tf.TensorSpec([None, None], tf.float32)

    @tf.function(input_signature=[tf.TensorSpec(x, tf.float32), tf.TensorSpec([None, None], tf.int32), v,
                                  tf.TensorSpec(x, tf.float32), v])
    def many(s0, a, r, s1, term):
        k = tf.shape(a)[0]
        losses = tf.TensorArray(tf.float32, size=k)
        qs = tf.TensorArray(tf.float32, size=k)
        for i in tf.range(k):
            loss, mq = step(s0[i], a[i], r[i], s1[i], term[i])
            losses = losses.write(i, loss)
            qs = qs.write(i, mq)
        return losses.stack(), qs.stack()

    # the concrete function: calling it skips tf.function's per-call signature matching (same graph)
    agent._train_many_fn = many.get_concrete_function()
    return agent._train_many_fn


def _run_updates(agent: Any, k: int) -> None:
    if k <= 0:
        return
    b = agent.batch_size
    s0, a, r, s1, term = agent.memory.sample(k * b)
    shp = (k, b) + tuple(agent.model.inputs[0].shape[1:])
    losses, qs = _train_many(agent)(tf.constant(s0.reshape(shp)), tf.constant(a.reshape(k, b)),
                                    tf.constant(r.reshape(k, b)), tf.constant(s1.reshape(shp)),
                                    tf.constant(term.reshape(k, b)))
    agent.history["loss"].extend(losses.numpy().tolist())
    agent.history["mean_q"].extend(qs.numpy().tolist())


def fit_vector(agent: Any, env: Any, nb_steps: int, n_envs: int = 8, progress: bool = False,
               desc: str = "dqn") -> Dict[str, list]:
    """Train ``agent`` for ``nb_steps`` environment steps on ``n_envs`` copies of ``env``.

    ``env`` is a :class:`KnockoutEnv` (its ``random_start`` and ``episode_length`` apply to each
    copy). Needs ``window_length == 1`` (the default). Returns the agent's training history.
    """
    agent._require_compiled()
    if agent.memory.window_length != 1:
        raise ValueError(f"fit_vector: window_length must be 1, got {agent.memory.window_length} "
                         "(use DQNAgent.fit for windows of several observations)")
    agent._seed_all(agent.seed)
    venv = VectorKnockoutEnv(env, n_envs, seed=None if agent.seed is None else agent.seed + 10_000)
    obs = venv.reset()
    q_fn = agent._q_fn.get_concrete_function()      # direct calls: no per-call signature matching
    ep_reward = np.zeros(venv.n_envs)
    hard = not isinstance(agent.target_model_update, float)
    agent.training = True
    bar = tqdm(total=int(nb_steps), desc=desc, leave=False, disable=not progress)
    try:
        while agent.step < int(nb_steps):
            m = min(venv.n_envs, int(nb_steps) - agent.step)
            q = q_fn(tf.constant(obs[:, None, :].astype(np.float32))).numpy()
            actions = select_actions(agent.policy, q)
            if m < venv.n_envs:  # the last vector step: only the first m environments count
                actions[m:] = env.no_trade_action
            nxt, rew, term, obs_next = venv.step(actions)
            pending = 0
            for i in range(m):
                if agent.step % agent.memory_interval == 0:
                    agent.memory.append(obs[i], int(actions[i]), float(rew[i]), nxt[i], bool(term[i]))
                agent.step += 1
                if agent.step > agent.nb_steps_warmup and agent.step % agent.train_interval == 0:
                    pending += 1
                if hard and agent.step % agent.target_model_update == 0:
                    _run_updates(agent, pending)
                    pending = 0
                    agent.update_target_model_hard()
            _run_updates(agent, pending)
            ep_reward[:m] += rew[:m]
            for i in np.flatnonzero(term[:m]):
                agent.history["episode_reward"].append(float(ep_reward[i]))
                ep_reward[i] = 0.0
            obs = obs_next
            bar.update(m)
    finally:
        bar.close()
        agent.training = False
    return agent.history


def training_device() -> str:
    """Where TensorFlow runs the agents' networks: its first GPU when it sees one (TensorFlow's default;
    nothing in mltrade pins the CPU), else the CPU."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return f"CPU (TensorFlow {tf.__version__} sees no GPU; {os.cpu_count()} CPU cores)"
    try:
        name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "")
    except (RuntimeError, ValueError):
        name = ""
    more = f" (+{len(gpus) - 1} more)" if len(gpus) > 1 else ""
    return f"GPU {gpus[0].name.replace('/physical_device:', '')}{' ' + name if name else ''}{more} " \
           f"(TensorFlow {tf.__version__})"
