"""Inference of a DQN session ensemble: votes, gate and final decisions for every session of a range
(:func:`decide`, used in training on validation and holdout and by the backtrader strategy through
:class:`mltrade.models.dqn.bundle.SessionModel`), and the check that its outputs carry information
(:func:`constant_outputs`)."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pandas as pd

from mltrade.models.baselines import TradeCosts
from mltrade.models.dqn.ensemble import DeviationStore, Ensemble, deviation_stats
from mltrade.models.dqn.gate import ConfidenceGate, drawdown_block, gate_features
from mltrade.models.dqn.simulation import IntradaySim, session_result


def decide(ens: Ensemble, gate: Optional[ConfidenceGate], daily: pd.DataFrame, obs: pd.DataFrame,
           costs: TradeCosts, settings: dict, per_row: bool = False, return_features: bool = False,
           sim: Optional[IntradaySim] = None) -> Any:
    """Votes, gate and final decisions for every session of ``daily`` (one batch per agent).

    Returns one row per session: direction / distance of the vote, agreement and
    counts, gate probability, drawdown block, the final ``trade_direction`` and the
    ensemble's predicted OHLC mean/standard error with the z deviations
    (``return_features=True``: also the gate's input frame).
    """
    obs = obs.reindex(daily.index)
    ok = np.isfinite(obs[ens.columns].to_numpy(float)).all(axis=1)
    if ens.session == "night" and len(ok):
        ok[0] = False
    q = np.zeros((len(ens), len(obs), len(ens.directions)), np.float32)
    if ok.any():
        sub = obs[ok]
        q[:, ok] = ens.q_values_per_row(sub) if per_row else ens.q_values(sub)
    v = ens.vote(q)
    v.direction[~ok] = 0
    frame = v.frame(daily.index)
    frame["valid"] = ok
    frame.loc[~ok, "session_distance"] = np.nan
    shadow_sum, shadow = session_result(daily, v.direction, v.distance, costs, ens.session, sim)
    opp_sum, opposite = session_result(daily, -v.direction, v.distance, costs, ens.session, sim)

    def cert_ret(sim: pd.DataFrame) -> np.ndarray:
        e, x = sim["entry"].to_numpy(float), sim["exit"].to_numpy(float)
        return np.where(e > 0, x / np.where(e > 0, e, 1.0) - 1.0, np.nan)
    frame["shadow_return"] = cert_ret(shadow)
    frame["opposite_return"] = cert_ret(opposite)
    dev = deviation_frame(ens, daily, obs, ok)
    frame = pd.concat([frame, dev], axis=1)
    dev_feat = DeviationStore.next_day_features(dev).fillna(0.0) if len(dev.columns) else None
    feats = gate_features(frame, ens.margins(q), frame["shadow_return"].to_numpy(),
                          frame["opposite_return"].to_numpy(), daily, int(settings.get("perf_window", 10)),
                          dev_feat)
    proba = gate.proba(feats) if gate is not None else np.ones(len(frame))
    frame["gate_proba"] = proba
    frame["gate_pass"] = proba >= (gate.threshold if gate is not None else 0.0)
    frame["drawdown_block"] = drawdown_block(frame["shadow_return"].to_numpy(),
                                             int(settings.get("drawdown_window", 20)),
                                             float(settings.get("drawdown_limit", -1.0)))
    trade = (frame["direction"] != 0) & frame["gate_pass"] & ~frame["drawdown_block"]
    frame["trade_direction"] = np.where(trade, frame["direction"], 0).astype(int)
    return (frame, feats) if return_features else frame


def deviation_frame(ens: Ensemble, daily: pd.DataFrame, obs: pd.DataFrame, ok: np.ndarray) -> pd.DataFrame:
    """The ensemble's predicted OHLC mean/standard error and z deviations of every session of ``daily``
    (rows ``ok``: complete observations; no columns with fewer than two agents)."""
    prev_close = daily["close"].shift(1).to_numpy(float)
    pred = np.full((len(ens), len(obs), 4), np.nan)
    if ok.any() and len(ens.regressors) == len(ens):
        pred[:, ok] = ens.predict_ohlc(obs[ok], prev_close[ok])
    actual = daily[["open", "high", "low", "close"]].to_numpy(float)
    if len(ens) >= 2:
        stats = deviation_stats(pred, actual)
        return DeviationStore.frame(daily.index, stats)
    return pd.DataFrame(index=daily.index)


def constant_outputs(decisions: pd.DataFrame, session: str, range_name: str) -> str:
    """Why the ensemble's outputs on ``decisions`` (from :func:`decide`) carry no information, or "".

    Constant means: the vote is the same direction on every session with complete
    observations (always long, always short or always no trade / tie), or the
    gates leave no trade at all.
    """
    valid = decisions["valid"].to_numpy(bool) if "valid" in decisions else np.ones(len(decisions), bool)
    n = int(valid.sum())
    if n == 0:
        return f"{range_name}: the {session} ensemble has no session with complete observations"
    vote = decisions["direction"].to_numpy()[valid]
    if (vote == vote[0]).all():
        what = {1: "votes long", -1: "votes short", 0: "votes no trade (or ties)"}[int(vote[0])]
        return f"{range_name}: the {session} ensemble {what} on all {n} sessions"
    traded = decisions["trade_direction"].to_numpy()[valid]
    if not (traded != 0).any():
        return (f"{range_name}: the {session} ensemble never trades: the gates refuse all "
                f"{int((vote != 0).sum())} voted trades on {n} sessions")
    return ""

