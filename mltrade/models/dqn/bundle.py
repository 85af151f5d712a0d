"""A trained DQN bundle on disk: each session's ensemble, gate, settings and deviation store written by
:func:`save_bundle` (the registry's save step) and loaded back as :class:`SessionModel` by :func:`load_bundle`
for the backtrader strategy; :func:`training_history` gives the daily bars its observations were built from."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import pandas as pd

from mltrade.models.baselines import TradeCosts
from mltrade.models.dqn.data import COST_KEYS, load_training_daily
from mltrade.models.dqn.deviation import DeviationModel
from mltrade.models.dqn.ensemble import DeviationStore, Ensemble
from mltrade.models.dqn.fold import FoldResult
from mltrade.models.dqn.gate import ConfidenceGate
from mltrade.models.dqn.inference import decide
from mltrade.models.dqn.observations import build_observations
from mltrade.models.dqn.simulation import IntradaySim, intraday_observations_for
from mltrade.models.registry import read_json, write_json_atomic


def save_bundle(directory: Path, results: Dict[str, FoldResult], cfg: dict, daily: pd.DataFrame) -> None:
    """Write each session's ensemble, gate, settings and deviation store under ``directory/<session>/``."""
    for session, r in results.items():
        d = Path(directory) / session
        r.ensemble.save(d)
        if r.deviation_model is not None:
            r.deviation_model.save(d / "deviation_model.json")
        write_json_atomic(d / "gate.json", r.gate.to_dict())
        write_json_atomic(d / "settings.json", {
            "session": session, "costs": {k: cfg[k] for k in COST_KEYS if k in cfg},
            "perf_window": cfg.get("perf_window", 10), "drawdown_window": cfg.get("drawdown_window", 20),
            "drawdown_limit": cfg.get("drawdown_limit", -1.0),
            "observations": cfg.get("observations", "original"),
            "mode": cfg.get("mode", "daily"), "n_candles": int(cfg.get("n_candles", 17)),
            "test_start": r.metrics["fold"]["test"][0], "test_end": r.metrics["fold"]["test"][1],
            "val_start": r.metrics["fold"]["val"][0] if r.metrics["fold"]["val"] else None,
            "val_end": r.metrics["fold"]["val"][1] if r.metrics["fold"]["val"] else None,
            "selection_metric": "val_return", "val_return": r.metrics["validation"]["total_return"],
            "degenerate": bool(r.metrics["degenerate_reason"]),
            "degenerate_reason": r.metrics["degenerate_reason"],
            "holdout_constant": bool(r.metrics["holdout_constant_reason"]),
            "holdout_constant_reason": r.metrics["holdout_constant_reason"],
            "below_baselines": bool(r.metrics.get("below_baselines_reason")),
            "below_baselines_reason": r.metrics.get("below_baselines_reason", ""),
            "holdout_return": (r.metrics.get("test") or {}).get("total_return")})
        DeviationStore(d / "deviations.parquet").update(
            r.decisions[[c for c in r.decisions.columns if c.split("_")[0] in ("mean", "se", "z")]])


@dataclass
class SessionModel:
    """A loaded session ensemble with its gate and settings."""

    ensemble: Ensemble
    gate: ConfidenceGate
    settings: dict
    deviation_model: Optional[DeviationModel] = None

    @property
    def costs(self) -> TradeCosts:
        return TradeCosts(**self.settings["costs"])

    def decide(self, daily: Optional[pd.DataFrame], per_row: bool = False,
               intraday: Optional[pd.DataFrame] = None,
               history: Optional[pd.DataFrame] = None) -> pd.DataFrame:
        """Decisions for every session of ``daily`` (observations built from ``daily`` itself, preceded by
        the daily bars of ``history`` before its first session, as training builds them from all bars).

        Intraday models take the intraday bars instead (``intraday=``; ``daily`` is derived from them)."""
        sim = None
        if self.ensemble.session == "intraday":
            if intraday is None:
                raise ValueError("intraday model: decide needs the intraday bars (intraday=...)")
            sim = IntradaySim(intraday, int(self.settings.get("n_candles", 17)))
            daily = sim.daily
        full = daily
        if history is not None and len(history) and len(daily):
            before = history.loc[history.index < daily.index[0], ["open", "high", "low", "close"]]
            full = pd.concat([before, daily[["open", "high", "low", "close"]]])
        obs = build_observations(full, self.settings.get("observations", "original"),
                                 deviation_model=self.deviation_model).reindex(daily.index)
        if sim is not None:
            obs = intraday_observations_for(obs, sim)
        return decide(self.ensemble, self.gate if self.gate.columns else None, daily, obs, self.costs,
                      self.settings, per_row=per_row, sim=sim)


def training_history(model_dir: str | Path, first: pd.Timestamp,
                     bars: Optional[pd.DataFrame] = None) -> tuple:
    """``(daily bars before first, note)``: the history the model's observations were built from (its
    ``config.json`` ``[dqn] data``), for a backtest whose bars start at ``first``. Used only when those
    bars are the same market: ``bars``' first session must equal the training data's (OHLC); otherwise
    ``(None, why)`` and the first sessions' observations are incomplete (not traded)."""
    try:
        cfg = (read_json(Path(model_dir) / "config.json") or {}).get("dqn", {})
        if cfg.get("mode", "daily") != "daily":
            return None, "intraday model: no daily history"
        daily = load_training_daily({**cfg, "start": "", "end": ""})
    except (OSError, ValueError, KeyError) as exc:
        return None, f"the model's training data cannot be read ({exc})"
    first = pd.Timestamp(first)
    if bars is not None and len(bars):
        if first not in daily.index or not np.allclose(
                daily.loc[first, ["open", "high", "low", "close"]].to_numpy(float),
                bars.iloc[0][["open", "high", "low", "close"]].to_numpy(float), rtol=1e-6):
            return None, (f"the backtest's bars on {first.date()} differ from the model's training data "
                          f"({cfg.get('data', 'sample')}): observations start from the backtest's own bars")
    before = daily.loc[daily.index < first]
    if not len(before):
        return None, "no training data before the backtest's first session"
    return before, f"observations use the model's training data ({cfg.get('data', 'sample')}) before {first.date()}"


def load_bundle(directory: str | Path) -> Dict[str, SessionModel]:
    """Every session model saved by :func:`save_bundle` under ``directory``."""
    d = Path(directory)
    out = {}
    for session in ("day", "night", "intraday"):
        sd = d / session
        if (sd / "ensemble.json").exists():
            gate = ConfidenceGate.from_dict(read_json(sd / "gate.json"))
            settings = read_json(sd / "settings.json")
            dev = None
            if settings.get("observations") == "original_deviation" or (sd / "deviation_model.json").exists():
                dev = DeviationModel.load(sd / "deviation_model.json")
            out[session] = SessionModel(Ensemble.load(sd), gate, settings, dev)
    if not out:
        raise FileNotFoundError(f"no DQN ensemble (day/, night/ or intraday/ with ensemble.json) under {d}")
    return out

