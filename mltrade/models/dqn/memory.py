"""Replay memory with keras-rl2's name and parameters: ``SequentialMemory(limit, window_length)``.

Stores transitions in numpy ring buffers. A sampled state is the window of the
last ``window_length`` observations of the same episode (zero-padded at the
episode start), exactly as keras-rl2 builds it, but vectorised.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np


class SequentialMemory:
    """Fixed-size replay memory of ``(obs, action, reward, next_obs, terminal)``."""

    def __init__(self, limit: int, window_length: int = 1, seed: Optional[int] = None) -> None:
        if int(limit) < 1:
            raise ValueError(f"SequentialMemory: limit must be >= 1, got {limit!r}")
        if int(window_length) < 1:
            raise ValueError(f"SequentialMemory: window_length must be >= 1, got {window_length!r}")
        self.limit = int(limit)
        self.window_length = int(window_length)
        self.rng = np.random.default_rng(seed)
        self._obs0: Optional[np.ndarray] = None
        self._obs1: Optional[np.ndarray] = None
        self._act = np.zeros(self.limit, dtype=np.int32)
        self._rew = np.zeros(self.limit, dtype=np.float32)
        self._term = np.zeros(self.limit, dtype=np.float32)
        self._pos_in_ep = np.zeros(self.limit, dtype=np.int64)   # step number inside its episode
        self._next = 0
        self.nb_entries = 0
        self._ep_step = 0
        self._recent: list = []

    def seed(self, seed: Optional[int]) -> None:
        """Re-seed the sampling generator."""
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.nb_entries

    def append(self, observation: np.ndarray, action: int, reward: float, next_observation: np.ndarray,
               terminal: bool) -> None:
        """Store one transition; ``terminal`` ends the episode (no bootstrap from ``next_observation``)."""
        obs = np.asarray(observation, np.float32)
        if self._obs0 is None:
            self._obs0 = np.zeros((self.limit,) + obs.shape, np.float32)
            self._obs1 = np.zeros((self.limit,) + obs.shape, np.float32)
        i = self._next
        self._obs0[i] = obs
        self._obs1[i] = np.asarray(next_observation, np.float32)
        self._act[i] = action
        self._rew[i] = reward
        self._term[i] = float(terminal)
        self._pos_in_ep[i] = self._ep_step
        self._ep_step += 1
        self._next = (i + 1) % self.limit
        self.nb_entries = min(self.nb_entries + 1, self.limit)

    def end_episode(self) -> None:
        """Mark that the next appended transition starts a new episode."""
        self._ep_step = 0

    def _window(self, store: np.ndarray, idx: np.ndarray) -> np.ndarray:
        w = self.window_length
        if w == 1:
            return store[idx][:, None]
        offs = np.arange(w - 1, -1, -1)                       # w-1 .. 0 steps back
        back = (idx[:, None] - offs[None, :]) % self.limit
        valid = offs[None, :] <= self._pos_in_ep[idx][:, None]
        # entries overwritten by the ring buffer are no longer valid history
        age_ok = offs[None, :] < np.minimum(self.nb_entries, self.limit)
        out = store[back]
        mask = (valid & age_ok).reshape(valid.shape + (1,) * (out.ndim - 2))
        return np.where(mask, out, 0.0).astype(np.float32)

    def sample(self, batch_size: int) -> Tuple[np.ndarray, ...]:
        """``(state0, action, reward, state1, terminal)``; states have shape ``(B, window, *obs)``."""
        if self.nb_entries == 0:
            raise ValueError("SequentialMemory.sample: the memory is empty")
        idx = self.rng.integers(0, self.nb_entries, size=int(batch_size))
        return (self._window(self._obs0, idx), self._act[idx], self._rew[idx],
                self._window(self._obs1, idx), self._term[idx])

    def get_recent_state(self, observation: np.ndarray, history: list) -> np.ndarray:
        """Window ``(window, *obs)`` ending with ``observation``, history = this episode's earlier obs."""
        w = self.window_length
        obs = np.asarray(observation, np.float32)
        frames = list(history[-(w - 1):]) if w > 1 else []
        frames = [np.zeros_like(obs)] * (w - 1 - len(frames)) + frames + [obs]
        return np.stack(frames).astype(np.float32)

    def get_config(self) -> dict:
        """keras-rl2-style config."""
        return {"limit": self.limit, "window_length": self.window_length}
