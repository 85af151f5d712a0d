"""The jobs of a distributed DQN training run: one per candidate agent, and the run's study name."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

#: [dqn] keys that do not change the trained agents (left out of the run's hash and config check)
UNTRAINED_KEYS = ("registry", "name")


def canonical(cfg: dict) -> dict:
    """The settings that shape the agents, sorted."""
    return {k: v for k, v in sorted(cfg.items()) if k not in UNTRAINED_KEYS}


def run_key(cfg: dict) -> str:
    """A short hash of the ``[dqn]`` settings that shape the agents (the default study name's suffix)."""
    text = json.dumps(canonical(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def default_study_name(cfg: dict) -> str:
    """``dqn-<run_key>``: the same config on every machine names the same study."""
    return f"dqn-{run_key(cfg)}"


@dataclass(frozen=True)
class Job:
    """One candidate agent: fold index, session kind, candidate index."""

    fold: int
    session: str
    candidate: int

    @property
    def key(self) -> str:
        """``f<fold>-<session>-c<candidate>``."""
        return f"f{self.fold}-{self.session}-c{self.candidate:03d}"

    def to_dict(self) -> dict:
        return {"fold": self.fold, "session": self.session, "candidate": self.candidate}

    @classmethod
    def from_dict(cls, d: dict) -> "Job":
        return cls(int(d["fold"]), str(d["session"]), int(d["candidate"]))
