"""Ensembles of DQN agents per session, their vote, and deviation tracking of predicted OHLC.

* Diversity: every agent has its own seed, network shape (``hidden_choices``)
  and data window (a random contiguous part of the training range).
* Vote: majority on direction among long / short / no trade; a tie for the
  most votes -> no trade; the barrier distance is the median of the winning
  side's distances.
* Deviation tracking: every agent has a small ridge regression (its own data
  window and penalty) predicting the session's OHLC relative to the previous
  close. Per session the ensemble mean and standard error ``std/sqrt(N)``
  (sample std, ``ddof=1``) are kept; ``(actual - mean) / se`` becomes a feature
  of the *next* session. :class:`DeviationStore` keeps them in a parquet file
  written atomically.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from mltrade.models.baselines import TradeCosts
from mltrade.models.dqn.env import LONG_BARRIERS, SHORT_BARRIERS, KnockoutEnv, action_table
from mltrade.models.dqn.linear import RidgeOHLC, Scaler
from mltrade.models.registry import read_json, write_json_atomic

OHLC = ("open", "high", "low", "close")


# ----------------------------------------------------------------------------- voting
@dataclass
class VoteResult:
    """Per-session vote: direction (+1/0/-1), median distance, agreement and the vote counts."""

    direction: np.ndarray
    distance: np.ndarray
    agreement: np.ndarray
    counts: np.ndarray          #: (T, 3) votes for long, no trade, short
    #: the ensemble's barrier distance of each session: the vote's distance where it trades, else the median
    #: of the agents' trading actions' distances (NaN where no agent trades); the baselines and the learner
    #: ladder trade it (:func:`mltrade.models.dqn.simulation.session_barriers`)
    barrier: Optional[np.ndarray] = None

    def frame(self, index: Any = None) -> pd.DataFrame:
        """As a DataFrame (one row per session)."""
        barrier = self.barrier if self.barrier is not None else np.where(self.direction != 0, self.distance,
                                                                         np.nan)
        return pd.DataFrame({"direction": self.direction, "distance": self.distance,
                             "agreement": self.agreement, "n_long": self.counts[:, 0],
                             "n_none": self.counts[:, 1], "n_short": self.counts[:, 2],
                             "session_distance": barrier}, index=index)


def vote(actions: np.ndarray, directions: np.ndarray, distances: np.ndarray) -> VoteResult:
    """Majority vote over agents' actions ``(N, T)``; ties for the top count -> no trade."""
    a = np.asarray(actions, int)
    if a.ndim == 1:
        a = a[:, None]
    n_agents, T = a.shape
    d = np.asarray(directions)[a]                 # (N, T)
    dist = np.asarray(distances, float)[a]
    counts = np.stack([(d > 0).sum(0), (d == 0).sum(0), (d < 0).sum(0)], axis=1)   # (T,3)
    top = counts.max(axis=1)
    n_top = (counts == top[:, None]).sum(axis=1)
    winner = np.argmax(counts, axis=1)            # 0 long, 1 none, 2 short
    direction = np.where(n_top > 1, 0, np.array([1, 0, -1])[winner])
    distance = np.zeros(T)
    barrier = np.full(T, np.nan)
    for t in range(T):
        if direction[t] != 0:
            distance[t] = barrier[t] = float(np.median(dist[d[:, t] == direction[t], t]))
        elif (d[:, t] != 0).any():
            barrier[t] = float(np.median(dist[d[:, t] != 0, t]))
    agreement = top / float(n_agents)
    return VoteResult(direction.astype(int), distance, agreement, counts, barrier)


# ----------------------------------------------------------------------- deviations
def deviation_stats(predictions: np.ndarray, actual: np.ndarray) -> Dict[str, np.ndarray]:
    """Ensemble mean, standard error ``std(ddof=1)/sqrt(N)`` and ``z = (actual-mean)/se`` per session.

    ``predictions``: ``(N, T, k)``; ``actual``: ``(T, k)``. Where ``se == 0`` z is 0.
    """
    p = np.asarray(predictions, float)
    if p.ndim != 3:
        raise ValueError(f"predictions: expected shape (agents, sessions, values), got {p.shape}")
    n = p.shape[0]
    if n < 2:
        raise ValueError("deviation_stats: need at least 2 agents for a standard error")
    mean = p.mean(axis=0)
    se = p.std(axis=0, ddof=1) / np.sqrt(n)
    act = np.asarray(actual, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, (act - mean) / np.where(se > 0, se, 1.0), 0.0)
    return {"mean": mean, "se": se, "z": z}


class DeviationStore:
    """Per-session ensemble mean / standard error / z of predicted OHLC, in a parquet file (atomic writes)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> pd.DataFrame:
        """All stored rows (empty frame when the file does not exist)."""
        if not self.path.exists():
            return pd.DataFrame()
        try:
            return pd.read_parquet(self.path)
        except Exception as exc:
            raise ValueError(f"{self.path}: cannot read the deviation store ({exc})") from exc

    def update(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Merge ``frame`` (indexed by date) into the store, newer rows win; returns the stored frame."""
        old = self.load()
        new = frame if old.empty else pd.concat([old[~old.index.isin(frame.index)], frame]).sort_index()
        new = new.copy()
        new.attrs = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        os.close(fd)
        try:
            new.to_parquet(tmp)
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return new

    @staticmethod
    def frame(index: pd.DatetimeIndex, stats: Dict[str, np.ndarray]) -> pd.DataFrame:
        """Rows for :meth:`update` from :func:`deviation_stats` output."""
        cols = {}
        for key in ("mean", "se", "z"):
            for j, c in enumerate(OHLC):
                cols[f"{key}_{c}"] = stats[key][:, j]
        return pd.DataFrame(cols, index=pd.DatetimeIndex(index))

    @staticmethod
    def next_day_features(stored: pd.DataFrame) -> pd.DataFrame:
        """``z`` of each session moved to the next session (known before it opens)."""
        z = stored[[f"z_{c}" for c in OHLC]].shift(1)
        return z.rename(columns=lambda c: f"dev_{c}")


# ---------------------------------------------------------------------- OHLC model
def ohlc_targets(daily: pd.DataFrame) -> pd.DataFrame:
    """Session OHLC relative to the previous close, minus 1 (NaN on the first row)."""
    prev = daily["close"].shift(1)
    return daily[list(OHLC)].div(prev, axis=0) - 1.0


# ------------------------------------------------------------------------ ensemble
@dataclass
class EnsembleConfig:
    """Training parameters of one ensemble (names follow the original / keras-rl2)."""

    agents: int = 10
    candidates: int = 12
    steps: int = 3000
    hidden_choices: List[List[int]] = field(default_factory=lambda: [[32], [64], [32, 32], [64, 32]])
    dropout: float = 0.0
    batch_norm: bool = False
    leaky_slope: float = 0.01
    window_min_frac: float = 0.6
    episode_length: int = 250
    gamma: float = 0.99
    batch_size: int = 32
    nb_steps_warmup: int = 100
    train_interval: int = 4
    target_model_update: float = 0.01
    delta_clip: float = 1.0
    memory_limit: int = 50000
    window_length: int = 1
    enable_double_dqn: bool = True
    enable_dueling_network: bool = True
    dueling_type: str = "avg"
    learning_rate: float = 2.5e-4
    tau_max: float = 1.0
    tau_min: float = 0.05
    tau_test: float = 0.05
    anneal_frac: float = 0.8
    ridge_alphas: List[float] = field(default_factory=lambda: [1.0, 3.0, 10.0, 30.0])
    reward_scale: float = 100.0
    seed: int = 0
    n_envs: int = 8

    def _check_n_envs(self) -> None:
        if isinstance(self.n_envs, bool) or not isinstance(self.n_envs, int) or self.n_envs < 1:
            raise ValueError(f"dqn.n_envs: expected an integer >= 1 (1 = one environment, DQNAgent.fit), "
                             f"got {self.n_envs!r}")
        if self.n_envs > 1 and self.window_length != 1:
            raise ValueError(f"dqn.n_envs: {self.n_envs} environments need window_length = 1, got "
                             f"{self.window_length}; set n_envs = 1")

    def __post_init__(self) -> None:
        tmu = float(self.target_model_update)
        if tmu <= 0:
            raise ValueError(f"dqn.target_model_update: expected > 0 (< 1: soft update rate per training "
                             f"step, >= 1: hard copy every that many steps), got {self.target_model_update!r}")
        if tmu >= 1 and tmu >= self.steps:
            raise ValueError(f"dqn.target_model_update: a hard update every {tmu:g} steps never happens "
                             f"within dqn.steps = {self.steps}: the target network would stay at its random start; "
                             "use fewer steps between updates than dqn.steps, or a soft rate below 1")
        if self.steps < 1:
            raise ValueError(f"dqn.steps: expected >= 1, got {self.steps!r}")
        self._check_n_envs()

    @classmethod
    def from_dict(cls, d: dict) -> "EnsembleConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"ensemble config: unknown key(s) {unknown}; valid keys: {sorted(known)}")
        return cls(**d)


class Ensemble:
    """N DQN agents for one session kind (``day``/``night``) with their OHLC regressors."""

    def __init__(self, session: str, agents: list, regressors: List[RidgeOHLC], scaler: Scaler,
                 columns: List[str], long_barriers: Sequence[float] = LONG_BARRIERS,
                 short_barriers: Sequence[float] = SHORT_BARRIERS, specs: Optional[list] = None,
                 obs_kind: str = "original") -> None:
        self.session = session
        self.agents = agents
        self.regressors = regressors
        self.scaler = scaler
        self.columns = list(columns)
        self.long_barriers = list(long_barriers)
        self.short_barriers = list(short_barriers)
        self.directions, self.distances = action_table(long_barriers, short_barriers)
        self.specs = specs or []
        self.obs_kind = obs_kind

    def __len__(self) -> int:
        return len(self.agents)

    def _x(self, observations: pd.DataFrame) -> np.ndarray:
        missing = [c for c in self.columns if c not in observations.columns]
        if missing:
            raise ValueError(f"observations: missing column(s) {missing[:5]} the ensemble was trained on")
        return self.scaler.transform(observations[self.columns].to_numpy(float))

    def q_values(self, observations: pd.DataFrame) -> np.ndarray:
        """Q-values ``(N, T, A)``: one batched call per agent for the whole period."""
        x = self._x(observations)
        return np.stack([ag.compute_batch_q_values(x[:, None, :]) for ag in self.agents])

    def q_values_per_row(self, observations: pd.DataFrame) -> np.ndarray:
        """Same as :meth:`q_values` but one call per agent and row (the live path; slow)."""
        x = self._x(observations)
        return np.stack([np.stack([ag.compute_q_values(row[None, :]) for row in x]) for ag in self.agents])

    def vote(self, q: np.ndarray) -> VoteResult:
        """Vote over greedy actions of ``q`` ``(N, T, A)``."""
        return vote(np.argmax(q, axis=2), self.directions, self.distances)

    def predict_ohlc(self, observations: pd.DataFrame, prev_close: np.ndarray) -> np.ndarray:
        """Per-agent predicted OHLC levels ``(N, T, 4)`` from the previous close."""
        x = self._x(observations)
        rel = np.stack([r.predict(x) for r in self.regressors])
        return (1.0 + rel) * np.asarray(prev_close, float)[None, :, None]

    def margins(self, q: np.ndarray) -> np.ndarray:
        """Per agent and session: best long Q minus best short Q ``(N, T)``."""
        lo = q[:, :, self.directions > 0].max(axis=2)
        sh = q[:, :, self.directions < 0].max(axis=2)
        return lo - sh

    # ----------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> None:
        """Agents as ``agent_XX.keras`` (+ json), regressors and metadata in ``ensemble.json``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for i, ag in enumerate(self.agents):
            ag.save(d / f"agent_{i:02d}.keras")
        write_json_atomic(d / "ensemble.json", {
            "session": self.session, "n_agents": len(self.agents), "columns": self.columns,
            "scaler": self.scaler.to_dict(), "regressors": [r.to_dict() for r in self.regressors],
            "long_barriers": self.long_barriers, "short_barriers": self.short_barriers,
            "specs": self.specs, "obs_kind": self.obs_kind})

    @classmethod
    def load(cls, directory: str | Path) -> "Ensemble":
        """Load an ensemble written by :meth:`save`."""
        from mltrade.models.dqn.agent import DQNAgent

        d = Path(directory)
        meta_path = d / "ensemble.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"Ensemble.load: no ensemble.json in {d}")
        meta = read_json(meta_path)
        agents = [DQNAgent.load(d / f"agent_{i:02d}.keras") for i in range(meta["n_agents"])]
        return cls(meta["session"], agents, [RidgeOHLC.from_dict(r) for r in meta["regressors"]],
                   Scaler.from_dict(meta["scaler"]), meta["columns"], meta["long_barriers"],
                   meta["short_barriers"], meta.get("specs"), meta.get("obs_kind", "original"))


def agent_specs(cfg: EnsembleConfig, n: int, train_len: int) -> List[dict]:
    """Seed, network shape, ridge penalty and data window (row offsets in the training range) per agent."""
    rng = np.random.default_rng(cfg.seed)
    specs = []
    for i in range(n):
        frac = float(rng.uniform(cfg.window_min_frac, 1.0))
        length = max(2, int(round(train_len * frac)))
        start = int(rng.integers(0, max(1, train_len - length + 1)))
        specs.append({"seed": int(cfg.seed * 1000 + i * 17 + 1),
                      "hidden": list(cfg.hidden_choices[i % len(cfg.hidden_choices)]),
                      "ridge_alpha": float(cfg.ridge_alphas[i % len(cfg.ridge_alphas)]),
                      "window": [start, start + length]})
    return specs


def train_agent(spec: dict, cfg: EnsembleConfig, obs_scaled: pd.DataFrame, daily: pd.DataFrame,
                session: str, costs: TradeCosts, long_barriers: Sequence[float] = LONG_BARRIERS,
                short_barriers: Sequence[float] = SHORT_BARRIERS, progress: bool = False,
                intraday: Optional[pd.DataFrame] = None, n_candles: int = 17) -> Any:
    """Build, train and return one DQN agent on its data window of ``obs_scaled`` / ``daily``.

    ``session="intraday"``: ``intraday`` bars, decision after ``n_candles`` (``obs_scaled`` then already
    holds the candle columns)."""
    import keras

    from mltrade.models.dqn.agent import DQNAgent, build_q_network
    from mltrade.models.dqn.memory import SequentialMemory
    from mltrade.models.dqn.policy import BoltzmannQPolicy, GreedyQPolicy, LinearAnnealedPolicy

    a, b = spec["window"]
    o = obs_scaled.iloc[a:b]
    dd = daily.loc[o.index]
    env_kw: dict = {}
    if session == "intraday":
        if intraday is None:
            raise ValueError("train_agent: session 'intraday' needs the intraday bars (intraday=...)")
        dates = intraday.index.normalize()
        dates = dates.tz_localize(None) if getattr(dates, "tz", None) is not None else dates
        env_kw = {"intraday": intraday[(dates >= o.index[0]) & (dates <= o.index[-1])], "n_candles": n_candles}
    env = KnockoutEnv(o, dd, mode=session, costs=costs, long_barriers=long_barriers, **env_kw,
                      short_barriers=short_barriers, random_start=True,
                      episode_length=min(cfg.episode_length, len(o)), reward_scale=cfg.reward_scale)
    keras.utils.set_random_seed(spec["seed"])
    model = build_q_network(env.observation_space.shape, env.nb_actions, spec["hidden"], cfg.window_length,
                            cfg.dropout, cfg.batch_norm, cfg.leaky_slope, seed=spec["seed"])
    policy = LinearAnnealedPolicy(BoltzmannQPolicy(), "tau", cfg.tau_max, cfg.tau_min, cfg.tau_test,
                                  max(1, int(cfg.steps * cfg.anneal_frac)))
    agent = DQNAgent(model, env.nb_actions, SequentialMemory(cfg.memory_limit, cfg.window_length),
                     policy=policy, test_policy=GreedyQPolicy(), gamma=cfg.gamma, batch_size=cfg.batch_size,
                     nb_steps_warmup=cfg.nb_steps_warmup, train_interval=cfg.train_interval,
                     target_model_update=cfg.target_model_update, delta_clip=cfg.delta_clip,
                     enable_double_dqn=cfg.enable_double_dqn,
                     enable_dueling_network=cfg.enable_dueling_network,
                     dueling_type=cfg.dueling_type, seed=spec["seed"])
    agent.compile(keras.optimizers.Adam(learning_rate=cfg.learning_rate))
    if cfg.n_envs > 1:
        from mltrade.models.dqn.vector import fit_vector

        fit_vector(agent, env, cfg.steps, n_envs=cfg.n_envs, progress=progress,
                   desc=f"{session} agent seed {spec['seed']}")
    else:
        agent.fit(env, cfg.steps, progress=progress, desc=f"{session} agent seed {spec['seed']}")
    return agent


def fit_regressor(spec: dict, obs_scaled: pd.DataFrame, daily: pd.DataFrame) -> RidgeOHLC:
    """Ridge OHLC model on the agent's data window."""
    a, b = spec["window"]
    o = obs_scaled.iloc[a:b]
    y = ohlc_targets(daily).reindex(o.index)
    ok = np.isfinite(o.to_numpy(float)).all(1) & np.isfinite(y.to_numpy(float)).all(1)
    return RidgeOHLC.fit(o.to_numpy(float)[ok], y.to_numpy(float)[ok], spec["ridge_alpha"])
