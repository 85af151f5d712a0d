"""What a DQN training run reads: its costs and ensemble settings from the ``[dqn]`` section, the daily or
intraday bars named by ``[dqn] data``, the observations, the walk-forward folds and the sessions
(:func:`training_data`), checked before any agent is trained."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import pandas as pd

from mltrade.models.baselines import TradeCosts
from mltrade.models.dqn.deviation import DeviationModel, walk_forward_deviation_observations
from mltrade.models.dqn.ensemble import EnsembleConfig
from mltrade.models.dqn.observations import OBSERVATION_SETS, build_observations
from mltrade.models.dqn.simulation import IntradaySim, intraday_observations_for
from mltrade.models.walkforward import Fold, walk_forward_folds

COST_KEYS = ("ratio", "spread", "fx", "fee", "stop", "barrier_step", "budget", "floor", "max_stake",
             "barrier_reference")


def costs_from(cfg: dict) -> TradeCosts:
    """TradeCosts from a ``[dqn]`` section."""
    return TradeCosts(**{k: cfg[k] for k in COST_KEYS if k in cfg})


def ensemble_config_from(cfg: dict) -> EnsembleConfig:
    """EnsembleConfig from the keys of a ``[dqn]`` section that it knows."""
    fields = EnsembleConfig.__dataclass_fields__
    return EnsembleConfig(**{k: v for k, v in cfg.items() if k in fields})


def load_training_daily(cfg: dict) -> pd.DataFrame:
    """Daily bars named by ``[dqn] data`` cut to start/end."""
    if cfg.get("data", "sample") == "sample":
        from mltrade.feeds.sample import load_daily
        daily = load_daily()
    else:
        from mltrade.feeds.loader import load_csv
        from mltrade.models.dqn.observations import daily_from_intraday
        df = load_csv(cfg["data"])
        daily = df if df.index.tz is None else daily_from_intraday(df)
    start, end = cfg.get("start") or None, cfg.get("end") or None
    return daily.loc[start:end]


def load_training_intraday(cfg: dict) -> pd.DataFrame:
    """Intraday bars named by ``[dqn] data`` (``sample``: the synthetic 5-minute sample) cut to start/end."""
    start, end = cfg.get("start") or None, cfg.get("end") or None
    if cfg.get("data", "sample") == "sample":
        from mltrade.feeds.sample import sample_intraday
        return sample_intraday(start, end)
    from mltrade.feeds.loader import load_csv
    df = load_csv(cfg["data"])
    if df.index.tz is None:
        raise ValueError(f"dqn.data: mode 'intraday' needs intraday bars with time-zone timestamps; "
                         f"{cfg['data']} holds daily bars")
    if start:
        df = df[df.index >= pd.Timestamp(start).tz_localize(df.index.tz)]
    if end:
        df = df[df.index < pd.Timestamp(end).tz_localize(df.index.tz) + pd.Timedelta(days=1)]
    return df


def fold_observations(cfg: dict, daily: pd.DataFrame, fold: Fold) -> tuple:
    """The 53 ``original_deviation`` values for one fold and its stage-1 deviation model.

    Two stages: the deviation ensemble is refitted walk-forward inside the fold's
    training range (no in-sample prediction reaches a training row) and fitted once
    on the whole training range for validation, test and inference; see
    :mod:`mltrade.models.dqn.deviation`.
    """
    ecfg = ensemble_config_from(cfg)
    alphas, fracs = DeviationModel.member_params(int(cfg.get("deviation_members", 8)), ecfg.ridge_alphas,
                                                 ecfg.window_min_frac, ecfg.seed)
    return walk_forward_deviation_observations(
        daily, fold.train_start, fold.train_stop, alphas, fracs,
        refit_every=int(cfg.get("deviation_refit_every", 21)), burn_in=int(cfg.get("deviation_burn_in", 126)),
        clip=float(cfg.get("deviation_clip", 100.0)))


@dataclass
class TrainingData:
    """What every fold of a training run reads: bars, observations (None: built per fold), folds, sessions."""

    daily: pd.DataFrame
    obs: Optional[pd.DataFrame]
    folds: List[Fold]
    sessions: List[str]
    sim: Optional[IntradaySim] = None

    def fold_observations(self, cfg: dict, fold: Fold) -> tuple:
        """``(observations, deviation model or None)`` of ``fold``."""
        fold_obs, dev_model = (fold_observations(cfg, self.daily, fold) if self.obs is None
                               else (self.obs, None))
        if self.sim is not None:
            fold_obs = intraday_observations_for(fold_obs, self.sim)
        return fold_obs, dev_model


def training_data(cfg: dict, daily: Optional[pd.DataFrame] = None,
                  intraday: Optional[pd.DataFrame] = None) -> TrainingData:
    """Load and check what a training run needs (``daily``/``intraday``: bars instead of ``[dqn] data``)."""
    mode = cfg.get("mode", "daily")
    if mode not in ("daily", "intraday"):
        raise ValueError(f"dqn.mode: expected 'daily' or 'intraday', got {mode!r}")
    sim: Optional[IntradaySim] = None
    if mode == "intraday":
        sim = IntradaySim(load_training_intraday(cfg) if intraday is None else intraday,
                          int(cfg.get("n_candles", 17)))
        daily = sim.daily
    daily = load_training_daily(cfg) if daily is None else daily
    kind = cfg.get("observations", "original")
    if kind not in OBSERVATION_SETS or kind == "custom":
        raise ValueError(f"dqn.observations: expected one of {[k for k in OBSERVATION_SETS if k != 'custom']}, "
                         f"got {kind!r}")
    obs = None if kind == "original_deviation" else build_observations(daily, kind)
    if int(cfg["val_days"]) < 1:
        raise ValueError(f"dqn.val_days: expected >= 1, got {cfg['val_days']}: agents, gates and the registry "
                         "choose on validation only (never on the holdout)")
    ensemble_config_from(cfg)                     # incoherent settings fail before any training
    folds = walk_forward_folds(daily.index, int(cfg["n_folds"]), int(cfg["train_days"]), int(cfg["val_days"]),
                               int(cfg["test_days"]), int(cfg["embargo"]))
    sessions: List[str] = ["intraday"] if sim is not None else list(cfg.get("sessions", ["day"]))
    for s in (sessions if sim is None else []):
        if s not in ("day", "night"):
            raise ValueError(f"dqn.sessions: expected 'day' and/or 'night', got {s!r}")
    return TrainingData(daily, obs, folds, sessions, sim)

