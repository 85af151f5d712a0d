"""Action-selection policies with keras-rl2's names and parameters.

``EpsGreedyQPolicy(eps)``, ``GreedyQPolicy``, ``BoltzmannQPolicy(tau, clip)`` and
``LinearAnnealedPolicy(inner_policy, attr, value_max, value_min, value_test, nb_steps)``
which anneals any numeric attribute of the inner policy linearly over the agent's
training steps and uses ``value_test`` while testing.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np


class Policy:
    """Base class: ``select_action(q_values) -> int``; ``agent`` is set by the agent."""

    def __init__(self, seed: Optional[int] = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.agent: Any = None

    def seed(self, seed: Optional[int]) -> None:
        """Re-seed the policy's random generator."""
        self.rng = np.random.default_rng(seed)

    def _set_agent(self, agent: Any) -> None:
        self.agent = agent

    def select_action(self, q_values: np.ndarray) -> int:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}

    def to_dict(self) -> dict:
        """``{"class_name", "config"}`` for saving."""
        return {"class_name": type(self).__name__, "config": self.get_config()}


class GreedyQPolicy(Policy):
    """Always the action with the highest Q-value."""

    def select_action(self, q_values: np.ndarray) -> int:
        return int(np.argmax(np.asarray(q_values).reshape(-1)))


class EpsGreedyQPolicy(Policy):
    """Random action with probability ``eps``, else greedy."""

    def __init__(self, eps: float = 0.1, seed: Optional[int] = None) -> None:
        super().__init__(seed)
        self.eps = float(eps)

    def select_action(self, q_values: np.ndarray) -> int:
        q = np.asarray(q_values).reshape(-1)
        if self.rng.random() < self.eps:
            return int(self.rng.integers(0, q.shape[0]))
        return int(np.argmax(q))

    def get_config(self) -> dict:
        return {"eps": self.eps}


class BoltzmannQPolicy(Policy):
    """Sample an action with probability ``exp(clip(q/tau)) / sum``."""

    def __init__(self, tau: float = 1.0, clip: Tuple[float, float] = (-500.0, 500.0),
                 seed: Optional[int] = None) -> None:
        super().__init__(seed)
        self.tau = float(tau)
        self.clip = (float(clip[0]), float(clip[1]))

    def probabilities(self, q_values: np.ndarray) -> np.ndarray:
        """Action probabilities for ``q_values`` (numerically stable softmax)."""
        q = np.asarray(q_values, np.float64).reshape(-1)
        z = np.clip(q / max(self.tau, 1e-12), self.clip[0], self.clip[1])
        e = np.exp(z - z.max())
        return e / e.sum()

    def select_action(self, q_values: np.ndarray) -> int:
        p = self.probabilities(q_values)
        return int(self.rng.choice(len(p), p=p))

    def get_config(self) -> dict:
        return {"tau": self.tau, "clip": list(self.clip)}


class LinearAnnealedPolicy(Policy):
    """Anneal ``inner_policy.<attr>`` from ``value_max`` to ``value_min`` over ``nb_steps`` training steps."""

    def __init__(self, inner_policy: Policy, attr: str, value_max: float, value_min: float,
                 value_test: float, nb_steps: int) -> None:
        if not hasattr(inner_policy, attr):
            raise ValueError(f"LinearAnnealedPolicy: policy {type(inner_policy).__name__} has no "
                             f"attribute {attr!r}")
        if int(nb_steps) < 1:
            raise ValueError(f"LinearAnnealedPolicy: nb_steps must be >= 1, got {nb_steps!r}")
        super().__init__()
        self.inner_policy = inner_policy
        self.attr = attr
        self.value_max = float(value_max)
        self.value_min = float(value_min)
        self.value_test = float(value_test)
        self.nb_steps = int(nb_steps)

    def seed(self, seed: Optional[int]) -> None:
        self.inner_policy.seed(seed)

    def _set_agent(self, agent: Any) -> None:
        self.agent = agent
        self.inner_policy._set_agent(agent)

    def get_current_value(self) -> float:
        """Annealed value at the agent's current step (``value_test`` when not training)."""
        if self.agent is None or getattr(self.agent, "training", False):
            step = 0 if self.agent is None else self.agent.step
            a = -(self.value_max - self.value_min) / self.nb_steps
            return max(self.value_min, a * step + self.value_max) if self.value_max >= self.value_min \
                else min(self.value_min, a * step + self.value_max)
        return self.value_test

    def select_action(self, q_values: np.ndarray) -> int:
        setattr(self.inner_policy, self.attr, self.get_current_value())
        return self.inner_policy.select_action(q_values)

    def get_config(self) -> dict:
        return {"inner_policy": self.inner_policy.to_dict(), "attr": self.attr, "value_max": self.value_max,
                "value_min": self.value_min, "value_test": self.value_test, "nb_steps": self.nb_steps}


_POLICIES = {c.__name__: c for c in (GreedyQPolicy, EpsGreedyQPolicy, BoltzmannQPolicy, LinearAnnealedPolicy)}


def policy_from_dict(d: dict) -> Policy:
    """Rebuild a policy saved with :meth:`Policy.to_dict`."""
    name = d.get("class_name")
    if name not in _POLICIES:
        raise ValueError(f"policy: unknown class_name {name!r}; expected one of {sorted(_POLICIES)}")
    cfg = dict(d.get("config", {}))
    if name == "LinearAnnealedPolicy":
        cfg["inner_policy"] = policy_from_dict(cfg["inner_policy"])
    return _POLICIES[name](**cfg)
