"""The original's 53-value observation: 44 causal values + the ensemble's deviation tracking.

Per session ``t`` (decided at the close of ``t-1``):

* 44 values of :func:`mltrade.models.dqn.observations.original_observations`;
* ``pred_open .. pred_close`` (4): the deviation ensemble's mean predicted OHLC of
  session ``t`` relative to the last close ``close[t-1]``, minus 1;
* ``dev_open .. dev_close`` (4): ``(actual - mean) / se`` of session ``t-1`` (the
  previous day's deviation of the actual OHLC from the ensemble's prediction, in
  standard errors ``std(ddof=1)/sqrt(N)``, as :func:`.ensemble.deviation_stats`
  and the deviation store), clipped to ``+-clip``;
* ``pred_se`` (1): the standard error of the predicted close of session ``t``
  relative to the last close (the ensemble's own disagreement).

The deviation ensemble (stage 1) is a set of ridge regressions (own penalty, own
trailing fraction of the data) from the scaled 44 values to OHLC / previous
close - 1. Leakage is avoided in two ways:

* :meth:`DeviationModel.fit` sees only the rows it is given (the fold's training
  range); validation, test and live sessions use that fixed model.
* On the training range itself the features come from :func:`walk_forward_deviation_observations`:
  the ridge members are refitted every ``refit_every`` sessions on the training
  rows *before* the block only (expanding window, the first ``burn_in`` rows have
  no features and are NaN, so the environment skips them). The row-``t`` target
  uses ``close[t]``, known at the decision for ``t+1``; a model fitted on rows
  ``< s`` is therefore known before every session of the block starting at ``s``,
  and the previous day's z of session ``t`` uses its prediction for ``t-1`` and
  ``actual[t-1]`` only. The DQN agents (stage 2) then never see an in-sample
  prediction.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import pandas as pd

from mltrade.models.dqn.linear import RidgeOHLC, Scaler
from mltrade.models.dqn.observations import OHLC, original_observations
from mltrade.models.registry import read_json, write_json_atomic

PRED_COLUMNS = [f"pred_{c}" for c in OHLC]
DEV_COLUMNS = [f"dev_{c}" for c in OHLC]
EXTRA_COLUMNS = PRED_COLUMNS + DEV_COLUMNS + ["pred_se"]
N_VALUES = 53


def _targets(daily: pd.DataFrame) -> np.ndarray:
    prev = daily["close"].shift(1)
    return (daily[list(OHLC)].div(prev, axis=0) - 1.0).to_numpy(float)


@dataclass
class DeviationModel:
    """Stage-1 ensemble of ridge OHLC predictors on the scaled original 44 values."""

    mean: np.ndarray
    scale: np.ndarray
    coefs: List[np.ndarray]
    intercepts: List[np.ndarray]
    alphas: List[float]
    fracs: List[float]
    columns: List[str]
    clip: float = 100.0
    fit_range: List[str] = field(default_factory=list)

    @staticmethod
    def member_params(n: int, alphas: Sequence[float], min_frac: float, seed: int) -> tuple:
        """Penalty and trailing data fraction of each of ``n`` members (deterministic from ``seed``)."""
        if n < 2:
            raise ValueError(f"deviation_members: need at least 2 members for a standard error, got {n}")
        if not alphas:
            raise ValueError("ridge_alphas: need at least one ridge penalty")
        rng = np.random.default_rng(seed + 7919)
        fr = [1.0] + [float(rng.uniform(min_frac, 1.0)) for _ in range(n - 1)]
        return [float(alphas[i % len(alphas)]) for i in range(n)], fr

    @classmethod
    def fit(cls, base: pd.DataFrame, daily: pd.DataFrame, alphas: Sequence[float], fracs: Sequence[float],
            clip: float = 100.0) -> "DeviationModel":
        """Fit every member on the (trailing fraction of the) rows of ``base`` with finite values and targets."""
        X = base.to_numpy(float)
        Y = _targets(daily.reindex(base.index)) if len(base) else np.zeros((0, 4))
        ok = np.isfinite(X).all(1) & np.isfinite(Y).all(1)
        X, Y = X[ok], Y[ok]
        if len(X) < 10:
            raise ValueError(f"DeviationModel.fit: only {len(X)} rows with complete observations and "
                             "targets; need at least 10")
        sc = Scaler.fit(X)
        Xs = sc.transform(X)
        coefs, inter = [], []
        for a, f in zip(alphas, fracs):
            k = max(10, int(round(len(Xs) * f)))
            r = RidgeOHLC.fit(Xs[-k:], Y[-k:], a)
            coefs.append(r.coef), inter.append(r.intercept)
        idx = base.index[ok]
        return cls(sc.mean, sc.scale, coefs, inter, list(map(float, alphas)), list(map(float, fracs)),
                   list(base.columns), float(clip), [str(idx[0].date()), str(idx[-1].date())])

    def predict_rel(self, base: pd.DataFrame) -> np.ndarray:
        """Per member predicted OHLC / previous close - 1, ``(N, T, 4)`` (NaN where inputs are missing)."""
        missing = [c for c in self.columns if c not in base.columns]
        if missing:
            raise ValueError(f"deviation model: observations lack column(s) {missing[:5]}")
        X = (base[self.columns].to_numpy(float) - self.mean) / self.scale
        return np.stack([X @ c + b for c, b in zip(self.coefs, self.intercepts)])

    def observations(self, daily: pd.DataFrame, base: Optional[pd.DataFrame] = None) -> pd.DataFrame:
        """The 53 values per session of ``daily`` with this (fitted) model: :func:`deviation_observations`."""
        return deviation_observations(daily, self, base)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "coefs": [c.tolist() for c in self.coefs], "intercepts": [b.tolist() for b in self.intercepts],
                "alphas": self.alphas, "fracs": self.fracs, "columns": self.columns, "clip": self.clip,
                "fit_range": self.fit_range}

    @classmethod
    def from_dict(cls, d: dict, source: str = "deviation model") -> "DeviationModel":
        need = ("mean", "scale", "coefs", "intercepts", "alphas", "fracs", "columns")
        missing = [k for k in need if k not in d]
        if missing:
            raise ValueError(f"{source}: missing field(s) {missing}")
        return cls(np.asarray(d["mean"], float), np.asarray(d["scale"], float),
                   [np.asarray(c, float) for c in d["coefs"]], [np.asarray(b, float) for b in d["intercepts"]],
                   list(d["alphas"]), list(d["fracs"]), list(d["columns"]), float(d.get("clip", 100.0)),
                   list(d.get("fit_range", [])))

    def save(self, path: str | Path) -> None:
        write_json_atomic(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "DeviationModel":
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"{p}: no deviation model (observations 'original_deviation' need it)")
        return cls.from_dict(read_json(p), str(p))


def _extra_from_rel(rel: np.ndarray, daily: pd.DataFrame, clip: float) -> np.ndarray:
    """The 9 extra values per row from per-member relative predictions ``rel`` ``(N, T, 4)``."""
    n = rel.shape[0]
    mean = rel.mean(axis=0)                                     # (T, 4) relative to close[t-1]
    se = rel.std(axis=0, ddof=1) / np.sqrt(n)
    actual = _targets(daily)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, (actual - mean) / np.where(se > 0, se, 1.0), 0.0)
    z = np.where(np.isfinite(actual) & np.isfinite(mean), z, np.nan)
    z = np.clip(z, -clip, clip)
    z_prev = np.full_like(z, np.nan)
    z_prev[1:] = z[:-1]                                         # session t-1's deviation, known at t
    return np.hstack([mean, z_prev, se[:, 3:4]]).astype(np.float32)


def deviation_observations(daily: pd.DataFrame, model: DeviationModel,
                           base: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """The 53 values per session with a fixed (already fitted) deviation model."""
    base = original_observations(daily) if base is None else base
    rel = model.predict_rel(base)
    extra = pd.DataFrame(_extra_from_rel(rel, daily, model.clip), index=daily.index, columns=EXTRA_COLUMNS)
    return pd.concat([base, extra], axis=1).astype(np.float32)


def walk_forward_deviation_observations(daily: pd.DataFrame, train_start: int, train_stop: int,
                                        alphas: Sequence[float], fracs: Sequence[float],
                                        refit_every: int = 21, burn_in: int = 126, clip: float = 100.0,
                                        base: Optional[pd.DataFrame] = None) -> tuple:
    """53 values for all rows of ``daily`` with no in-sample prediction, and the final deviation model.

    Rows before ``train_start + burn_in`` are NaN. Training rows from there on get
    predictions of members fitted on training rows before their ``refit_every``
    block; rows from ``train_stop`` on use the model fitted on the whole training
    range (returned, for validation, test and inference).
    """
    if refit_every < 1:
        raise ValueError(f"deviation_refit_every: must be >= 1, got {refit_every}")
    if burn_in < 10:
        raise ValueError(f"deviation_burn_in: must be >= 10 sessions, got {burn_in}")
    if train_start + burn_in >= train_stop:
        raise ValueError(f"deviation_burn_in: {burn_in} sessions leave no training rows "
                         f"(training range has {train_stop - train_start})")
    base = original_observations(daily) if base is None else base
    T = len(daily)
    rel = np.full((len(alphas), T, 4), np.nan)
    for s in range(train_start + burn_in, train_stop, refit_every):
        m = DeviationModel.fit(base.iloc[train_start:s], daily.iloc[train_start:s], alphas, fracs, clip)
        e = min(s + refit_every, train_stop)
        rel[:, s:e] = m.predict_rel(base.iloc[s:e])
    final = DeviationModel.fit(base.iloc[train_start:train_stop], daily.iloc[train_start:train_stop],
                               alphas, fracs, clip)
    rel[:, train_stop:] = final.predict_rel(base.iloc[train_stop:])
    extra = _extra_from_rel(rel, daily, clip)
    # the first usable row needs the prediction of the row before it (the previous day's z)
    out = pd.concat([base, pd.DataFrame(extra, index=daily.index, columns=EXTRA_COLUMNS)], axis=1)
    out.iloc[:train_start + burn_in + 1] = np.nan
    return out.astype(np.float32), final
