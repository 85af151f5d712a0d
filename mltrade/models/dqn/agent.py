"""A small DQN agent on Keras 3 that keeps keras-rl2's algorithm and parameter names.

keras-rl2 1.0.5 does not import on TensorFlow 2.21 / Keras 3
(``ImportError: cannot import name 'model_from_config' from 'tensorflow.keras.models'``),
so this module re-implements its ``DQNAgent``: experience replay, a target network
with hard (``target_model_update >= 1``: copy every N steps) or soft
(``< 1``: ``tau``) updates, ``train_interval``, ``nb_steps_warmup``, Huber loss
clipped at ``delta_clip``, double DQN and a dueling head (``avg``, ``max``,
``naive``). The training step is one ``tf.function``. Agents save as a Keras 3
``.keras`` file with a JSON config beside it.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np
import keras
import tensorflow as tf
from tqdm.auto import tqdm

from mltrade.models.dqn.memory import SequentialMemory
from mltrade.models.dqn.policy import GreedyQPolicy, Policy, policy_from_dict
from mltrade.models.registry import write_json_atomic

DUELING_TYPES = ("avg", "max", "naive")


@keras.saving.register_keras_serializable(package="mltrade_dqn")
class DuelingCombine(keras.layers.Layer):
    """Combine ``[V, A_1..A_n]`` into Q: ``avg`` V+A-mean(A), ``max`` V+A-max(A), ``naive`` V+A."""

    def __init__(self, dueling_type: str = "avg", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if dueling_type not in DUELING_TYPES:
            raise ValueError(f"dueling_type: expected one of {DUELING_TYPES}, got {dueling_type!r}")
        self.dueling_type = dueling_type

    def call(self, y: Any) -> Any:
        v = y[:, :1]
        a = y[:, 1:]
        if self.dueling_type == "avg":
            return v + a - keras.ops.mean(a, axis=1, keepdims=True)
        if self.dueling_type == "max":
            return v + a - keras.ops.max(a, axis=1, keepdims=True)
        return v + a

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (input_shape[0], input_shape[1] - 1)

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg["dueling_type"] = self.dueling_type
        return cfg


def build_q_network(obs_shape: Sequence[int], nb_actions: int, hidden: Sequence[int] = (64, 64),
                    window_length: int = 1, dropout: float = 0.0, batch_norm: bool = False,
                    leaky_slope: float = 0.01, seed: Optional[int] = None) -> keras.Model:
    """Dense Q-network like the original's blocks: Dense -> LeakyReLU (-> Dropout -> BatchNorm)."""
    inp = keras.Input(shape=(int(window_length),) + tuple(int(s) for s in obs_shape), name="state")
    x = keras.layers.Flatten()(inp)
    for i, units in enumerate(hidden):
        x = keras.layers.Dense(int(units), kernel_initializer=keras.initializers.GlorotUniform(
            seed=None if seed is None else seed + i))(x)
        x = keras.layers.LeakyReLU(negative_slope=leaky_slope)(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, seed=None if seed is None else seed + 100 + i)(x)
        if batch_norm:
            x = keras.layers.BatchNormalization()(x)
    out = keras.layers.Dense(int(nb_actions), kernel_initializer=keras.initializers.GlorotUniform(
        seed=None if seed is None else seed + 999), name="q")(x)
    return keras.Model(inp, out)


class DQNAgent:
    """Deep Q-Network agent (keras-rl2 ``DQNAgent`` semantics) for discrete actions."""

    def __init__(self, model: keras.Model, nb_actions: int, memory: SequentialMemory,
                 policy: Optional[Policy] = None, test_policy: Optional[Policy] = None,
                 gamma: float = 0.99, batch_size: int = 32, nb_steps_warmup: int = 1000,
                 train_interval: int = 1, memory_interval: int = 1, target_model_update: float = 10000,
                 delta_clip: float = np.inf, enable_double_dqn: bool = False,
                 enable_dueling_network: bool = False, dueling_type: str = "avg",
                 seed: Optional[int] = None, _model_has_head: bool = False) -> None:
        if dueling_type not in DUELING_TYPES:
            raise ValueError(f"dueling_type: expected one of {DUELING_TYPES}, got {dueling_type!r}")
        if target_model_update <= 0:
            raise ValueError(f"target_model_update: expected > 0, got {target_model_update!r}")
        for name, v in (("batch_size", batch_size), ("train_interval", train_interval),
                        ("memory_interval", memory_interval)):
            if int(v) < 1:
                raise ValueError(f"{name}: expected >= 1, got {v!r}")
        if not 0 <= gamma <= 1:
            raise ValueError(f"gamma: expected a value in [0, 1], got {gamma!r}")
        out_dim = model.outputs[0].shape[-1]
        if out_dim != nb_actions:
            raise ValueError(f"model output has {out_dim} units, expected nb_actions={nb_actions}")
        self.nb_actions = int(nb_actions)
        self.memory = memory
        self.policy = policy if policy is not None else GreedyQPolicy()
        self.test_policy = test_policy if test_policy is not None else GreedyQPolicy()
        self.gamma = float(gamma)
        self.batch_size = int(batch_size)
        self.nb_steps_warmup = int(nb_steps_warmup)
        self.train_interval = int(train_interval)
        self.memory_interval = int(memory_interval)
        self.target_model_update = float(target_model_update) if target_model_update < 1 \
            else int(target_model_update)
        self.delta_clip = float(delta_clip)
        self.enable_double_dqn = bool(enable_double_dqn)
        self.enable_dueling_network = bool(enable_dueling_network)
        self.dueling_type = dueling_type
        self.seed = seed
        if self.enable_dueling_network and not _model_has_head:
            # replace the output layer: Dense(nb_actions + 1) -> DuelingCombine, as keras-rl2 does
            pre = model.layers[-2].output
            init = keras.initializers.GlorotUniform(seed=None if seed is None else seed + 7)
            y = keras.layers.Dense(self.nb_actions + 1, name="dueling_va", kernel_initializer=init)(pre)
            q = DuelingCombine(dueling_type, name="dueling_q")(y)
            model = keras.Model(model.inputs, q)
        self.model = model
        self.policy._set_agent(self)
        self.test_policy._set_agent(self)
        self.step = 0
        self.training = False
        self.compiled = False
        self.optimizer: Optional[keras.optimizers.Optimizer] = None
        self.history: Dict[str, list] = {"loss": [], "mean_q": [], "episode_reward": []}

    # ------------------------------------------------------------------ setup
    def compile(self, optimizer: Optional[keras.optimizers.Optimizer] = None, metrics: Any = None) -> None:
        """Create the target network and the ``tf.function`` train step (default Adam lr 2.5e-4)."""
        self.optimizer = optimizer if optimizer is not None else keras.optimizers.Adam(learning_rate=2.5e-4)
        self.target_model = keras.models.clone_model(self.model)
        self.target_model.set_weights(self.model.get_weights())
        self.optimizer.build(self.model.trainable_variables)
        model, target, opt = self.model, self.target_model, self.optimizer
        gamma = tf.constant(self.gamma, tf.float32)
        clip = self.delta_clip
        double = self.enable_double_dqn
        soft = isinstance(self.target_model_update, float)
        tau = tf.constant(self.target_model_update if soft else 0.0, tf.float32)
        nb = self.nb_actions
        x_spec = tf.TensorSpec([None] + list(self.model.inputs[0].shape[1:]), tf.float32)
        v_spec = tf.TensorSpec([None], tf.float32)

        @tf.function(input_signature=[x_spec, tf.TensorSpec([None], tf.int32), v_spec, x_spec, v_spec])
        def train_step(s0, a, r, s1, term):
            q1_t = target(s1, training=False)
            if double:
                best = tf.argmax(model(s1, training=False), axis=1)
                q1 = tf.reduce_sum(q1_t * tf.one_hot(best, nb), axis=1)
            else:
                q1 = tf.reduce_max(q1_t, axis=1)
            y = tf.stop_gradient(r + gamma * (1.0 - term) * q1)
            with tf.GradientTape() as tape:
                q0 = model(s0, training=True)
                qa = tf.reduce_sum(q0 * tf.one_hot(a, nb), axis=1)
                err = y - qa
                if math.isinf(clip):
                    loss = tf.reduce_mean(0.5 * tf.square(err))
                else:
                    ab = tf.abs(err)
                    loss = tf.reduce_mean(tf.where(ab < clip, 0.5 * tf.square(err), clip * (ab - 0.5 * clip)))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            if soft:
                for tw, w in zip(target.weights, model.weights):
                    tw.assign(tau * w + (1.0 - tau) * tw)
            return loss, tf.reduce_mean(qa)

        @tf.function(input_signature=[x_spec])
        def q_fn(x):
            return model(x, training=False)

        self._train_step = train_step
        self._q_fn = q_fn
        self.compiled = True

    def _input(self, states: np.ndarray) -> np.ndarray:
        shape = tuple(self.model.inputs[0].shape[1:])
        return np.asarray(states, np.float32).reshape((-1,) + shape)

    def update_target_model_hard(self) -> None:
        """Copy the online weights into the target network."""
        self.target_model.set_weights(self.model.get_weights())

    # -------------------------------------------------------------- inference
    def compute_batch_q_values(self, states: np.ndarray, chunk: int = 8192) -> np.ndarray:
        """Q-values ``(B, nb_actions)`` for a batch of states ``(B, window, *obs)``, in few large calls."""
        self._require_compiled()
        x = self._input(states)
        out = [self._q_fn(tf.constant(x[i:i + chunk])).numpy() for i in range(0, len(x), chunk)]
        return np.concatenate(out) if out else np.zeros((0, self.nb_actions), np.float32)

    def compute_q_values(self, state: np.ndarray) -> np.ndarray:
        """Q-values ``(nb_actions,)`` of one state ``(window, *obs)``."""
        self._require_compiled()
        return self._q_fn(tf.constant(self._input(state[None]))).numpy()[0]

    def forward(self, observation: np.ndarray, history: Optional[list] = None) -> int:
        """Action for the current observation with the training or the test policy."""
        state = self.memory.get_recent_state(observation, history or [])
        q = self.compute_q_values(state)
        return (self.policy if self.training else self.test_policy).select_action(q)

    def _require_compiled(self) -> None:
        if not self.compiled:
            raise RuntimeError("DQNAgent: call compile() first")

    # --------------------------------------------------------------- training
    def _seed_all(self, seed: Optional[int]) -> None:
        if seed is None:
            return
        keras.utils.set_random_seed(int(seed))
        self.memory.seed(seed + 1)
        self.policy.seed(seed + 2)
        self.test_policy.seed(seed + 3)

    def fit(self, env: Any, nb_steps: int, nb_max_episode_steps: Optional[int] = None,
            progress: bool = False, desc: str = "dqn") -> Dict[str, list]:
        """Train for ``nb_steps`` environment steps; returns the training history."""
        self._require_compiled()
        self._seed_all(self.seed)
        self.training = True
        ep = 0
        obs, _ = env.reset(seed=None if self.seed is None else self.seed + 10_000)
        hist: list = []
        ep_reward, ep_steps = 0.0, 0
        bar = tqdm(total=int(nb_steps), desc=desc, leave=False, disable=not progress)
        try:
            for _ in range(int(nb_steps)):
                state = self.memory.get_recent_state(obs, hist)
                action = self.policy.select_action(self.compute_q_values(state))
                obs1, reward, terminated, truncated, _info = env.step(action)
                ep_steps += 1
                ep_reward += float(reward)
                if self.step % self.memory_interval == 0:
                    self.memory.append(obs, action, float(reward), obs1, bool(terminated))
                self.step += 1
                if self.step > self.nb_steps_warmup and self.step % self.train_interval == 0:
                    s0, a, r, s1, term = self.memory.sample(self.batch_size)
                    loss, mq = self._train_step(tf.constant(self._input(s0)), tf.constant(a),
                                                tf.constant(r), tf.constant(self._input(s1)),
                                                tf.constant(term))
                    self.history["loss"].append(float(loss))
                    self.history["mean_q"].append(float(mq))
                if not isinstance(self.target_model_update, float) and \
                        self.step % self.target_model_update == 0:
                    self.update_target_model_hard()
                done = terminated or truncated or (nb_max_episode_steps is not None
                                                   and ep_steps >= nb_max_episode_steps)
                if done:
                    self.history["episode_reward"].append(ep_reward)
                    self.memory.end_episode()
                    ep += 1
                    obs, _ = env.reset()
                    hist, ep_reward, ep_steps = [], 0.0, 0
                else:
                    hist.append(obs)
                    obs = obs1
                bar.update(1)
        finally:
            bar.close()
            self.training = False
        return self.history

    def test(self, env: Any, nb_episodes: int = 1,
             nb_max_episode_steps: Optional[int] = None) -> Dict[str, list]:
        """Run ``nb_episodes`` with the test policy; returns episode rewards and step counts."""
        self._require_compiled()
        self.training = False
        out: Dict[str, list] = {"episode_reward": [], "nb_steps": []}
        for _ in range(int(nb_episodes)):
            obs, _ = env.reset()
            hist: list = []
            total, steps = 0.0, 0
            while True:
                action = self.forward(obs, hist)
                hist.append(obs)
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                steps += 1
                if terminated or truncated or (nb_max_episode_steps and steps >= nb_max_episode_steps):
                    break
            out["episode_reward"].append(total)
            out["nb_steps"].append(steps)
        return out

    # ----------------------------------------------------------- persistence
    def get_config(self) -> dict:
        """Agent parameters (keras-rl2 names), memory and policies."""
        return {"nb_actions": self.nb_actions, "gamma": self.gamma, "batch_size": self.batch_size,
                "nb_steps_warmup": self.nb_steps_warmup, "train_interval": self.train_interval,
                "memory_interval": self.memory_interval, "target_model_update": self.target_model_update,
                "delta_clip": None if math.isinf(self.delta_clip) else self.delta_clip,
                "enable_double_dqn": self.enable_double_dqn,
                "enable_dueling_network": self.enable_dueling_network, "dueling_type": self.dueling_type,
                "seed": self.seed, "memory": self.memory.get_config(), "policy": self.policy.to_dict(),
                "test_policy": self.test_policy.to_dict(), "step": self.step}

    def save(self, path: str | Path) -> None:
        """Write the Q-network as ``<path>`` (``.keras``) and the agent config as ``<path>.json``."""
        path = Path(path)
        if path.suffix != ".keras":
            raise ValueError(f"DQNAgent.save: path must end with .keras, got {str(path)!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.keras")
        self.model.save(tmp)
        os.replace(tmp, path)
        write_json_atomic(path.with_suffix(".json"), self.get_config())

    @classmethod
    def load(cls, path: str | Path, compile: bool = True) -> "DQNAgent":
        """Load an agent written by :meth:`save` (model, parameters, policies)."""
        path = Path(path)
        cfg_path = path.with_suffix(".json")
        if not path.exists():
            raise FileNotFoundError(f"DQNAgent.load: no model file {path}")
        if not cfg_path.exists():
            raise FileNotFoundError(f"DQNAgent.load: no config {cfg_path} beside {path.name}")
        try:
            cfg = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{cfg_path}: line {exc.lineno}: malformed JSON ({exc.msg})") from exc
        model = keras.models.load_model(path, compile=False)
        mem = SequentialMemory(**cfg["memory"])
        agent = cls(model, cfg["nb_actions"], mem, policy=policy_from_dict(cfg["policy"]),
                    test_policy=policy_from_dict(cfg["test_policy"]), gamma=cfg["gamma"],
                    batch_size=cfg["batch_size"], nb_steps_warmup=cfg["nb_steps_warmup"],
                    train_interval=cfg["train_interval"], memory_interval=cfg["memory_interval"],
                    target_model_update=cfg["target_model_update"],
                    delta_clip=np.inf if cfg["delta_clip"] is None else cfg["delta_clip"],
                    enable_double_dqn=cfg["enable_double_dqn"],
                    enable_dueling_network=cfg["enable_dueling_network"], dueling_type=cfg["dueling_type"],
                    seed=cfg.get("seed"), _model_has_head=True)
        agent.step = int(cfg.get("step", 0))
        if compile:
            agent.compile()
        return agent
