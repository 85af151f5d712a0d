"""``NCPStrategy``: trade the NCP/LTC model's direction after the session's first N candles.

At the decision bar (bar ``N-1``; the order fills at bar ``N``'s open, as in
the training labels) it reads the model's probability that a long certificate
ends the session above its entry, picks a direction (threshold, ATR-binned
adaptation) and a barrier distance (fixed or mapped from the confidence), and
submits the decision through ``submit_decision`` (so an overlay can review it).
Stop and session-end exit come from ``KnockoutStrategy``.

Backtests (``mode="batch"``) compute every session's probability in one
batch at start from the feed's DataFrame; the inputs of a session use only bars
up to its decision bar (tested by truncate-and-compare). ``mode="live"`` runs
one prediction per decision from the bars seen so far.

The report sections, figures and the holdout-figure check come from :class:`mltrade.strategies.ncp_report.NCPReport`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

from mltrade.strategies.base import KnockoutStrategy
from mltrade.strategies.decision import Decision
from mltrade.strategies.ncp_report import NCPReport

_UNIX_ORDINAL = 719163.0


def confidence_distance(p_long: float, default: float, mapping: Optional[List[Tuple[float, float]]]) -> float:
    """Barrier distance for a probability: the entry of ``mapping`` [(min confidence, distance), ...]
    with the highest threshold not above ``confidence = |2p - 1|``; ``default`` when none applies."""
    if not mapping:
        return float(default)
    conf = abs(2.0 * float(p_long) - 1.0)
    dist = float(default)
    for lo, d in sorted((float(a), float(b)) for a, b in mapping):
        if not 0 < d < 1:
            raise ValueError(f"confidence_distances: distance must be a fraction in (0, 1), got {d!r}")
        if conf >= lo:
            dist = d
    return dist


class NCPStrategy(KnockoutStrategy, NCPReport):
    """Dual-branch NCP/LTC model decides direction (and optionally barrier distance) once per session."""

    params = (
        # registry version directory, or a model.keras file with ncp.json beside it
        ("model_path", ".mltrade/models/ncp/current"),
        ("model", None),              # an already loaded Keras model (wins over model_path; needs meta)
        ("meta", None),               # the ncp.json dict belonging to ``model``
        # batch: all sessions predicted at start; live: one prediction per decision
        ("mode", "batch"),
        ("threshold", None),          # P(long) threshold (None = the model's); short at 1 - threshold
        ("adapt", True),              # apply the model's ATR-binned follow/flip/skip adaptation
        ("confidence_distances", None),  # [(min confidence |2p-1|, distance), ...]; None = fixed distance
        ("history_sessions", 250),    # live mode: sessions of bars used to compute the daily features
        # daily bars before the feed for indicator warm-up: a DataFrame, the path of a daily CSV, None, or
        # "auto": the real sample dailies when the feed is the embedded sample, else the daily CSV the model
        # was trained with ([ncp] daily_history in its ncp.json settings) when there is one
        ("daily_history", "auto"),
        ("baseline_seed", 7),         # report: seed of the random-direction baseline of the figures
    )
    param_space = {"distance": (0.02, 0.08), "stop": (0.5, 0.95)}

    def __init__(self) -> None:
        super().__init__()
        from mltrade.models.ncp.adapt import ATRAdaptation
        if self.p.mode not in ("batch", "live"):
            raise ValueError(f"mode: expected 'batch' or 'live', got {self.p.mode!r}")
        if self.p.model is not None:
            if self.p.meta is None:
                raise ValueError("meta: a model passed as an object needs its ncp.json dict (meta)")
            self.model, self.meta = self.p.model, dict(self.p.meta)
        else:
            from mltrade.models.ncp.artifact import load_artifact
            self.model, self.meta = load_artifact(str(self.p.model_path))
        st = self.meta.get("settings", {})
        self.n_candles = int(st.get("n_candles", 17))
        self.seq_distance = float(st.get("seq_distance", 0.04))
        self.threshold = float(self.p.threshold if self.p.threshold is not None else st.get("threshold", 0.5))
        self.adaptation = (ATRAdaptation.from_dict(self.meta["adaptation"])
                           if self.p.adapt and self.meta.get("adaptation") else ATRAdaptation.identity())
        self.predictions: Dict[Any, Tuple[float, float]] = {}  # session date -> (p_long, early ATR)
        self._history = self._resolve_history(self.p.daily_history, st)
        self.predict_calls = 0

    def _resolve_history(self, hist: Any, settings: dict) -> Optional[pd.DataFrame]:
        from mltrade.models.ncp.history import daily_history_for, load_daily_history
        if hist is None or isinstance(hist, pd.DataFrame):
            return hist
        if not isinstance(hist, (str, Path)) or not str(hist):
            raise ValueError(f"daily_history: expected a DataFrame, the path of a daily CSV, None or 'auto', "
                             f"got {hist!r}")
        if str(hist) != "auto":
            return load_daily_history(str(hist), "daily_history")
        df = getattr(self.data.p, "dataframe", None)
        if df is None:
            return None
        trained = str(settings.get("daily_history") or "")
        if "arch.data.nasdaq" not in str(df.attrs.get("source", "")) and trained:
            return load_daily_history(trained, "daily_history (auto: [ncp] daily_history of the model's "
                                               "ncp.json settings)")
        return daily_history_for(df)

    # ------------------------------------------------------------------ inputs
    def _calendar(self) -> Tuple[str, int]:
        return str(getattr(self.data.p, "exchange", "XNAS")), int(getattr(self.data.p, "interval", 5) or 5)

    def _predict_frame(self, bars: pd.DataFrame) -> Dict[Any, Tuple[float, float]]:
        from mltrade.models.ncp.dataset import build_inputs
        from mltrade.models.ncp.model import predict_proba
        cal, interval = self._calendar()
        inp = build_inputs(bars, self.n_candles, self.seq_distance, cal, interval, self._history)
        if len(inp) == 0:
            return {}
        p = predict_proba(self.model, inp.daily, inp.seq)
        self.predict_calls += 1
        return {pd.Timestamp(d).date(): (float(pi), float(a)) for d, pi, a in zip(inp.dates, p, inp.atr)}

    def start(self) -> None:
        if self.p.mode == "batch":
            df = getattr(self.data.p, "dataframe", None)
            if df is None:
                raise ValueError("mode: 'batch' needs a feed built from a DataFrame (IndexData); "
                                 "use mode='live'")
            self.predictions = self._predict_frame(df)

    def _history_frame(self) -> pd.DataFrame:
        d = self.data
        n = min(len(d), int(self.p.history_sessions) * 80)
        num = np.asarray(d.datetime.get(size=n), float)
        # backtrader stores days as floats: round to whole seconds
        ns = np.round((num - _UNIX_ORDINAL) * 86_400.0).astype("int64") * 1_000_000_000
        cal, _ = self._calendar()
        from mltrade.calendars import timezone_of
        idx = pd.DatetimeIndex(ns.astype("datetime64[ns]")).tz_localize("UTC").tz_convert(timezone_of(cal))
        cols = {c: np.asarray(getattr(d, c).get(size=n), float)
                for c in ("open", "high", "low", "close", "volume")}
        return pd.DataFrame(cols, index=idx)

    def probability(self) -> Optional[Tuple[float, float]]:
        """(P(long), early ATR) of the current session, or None when the model has no input for it."""
        day = self.data.datetime.date(0)
        if self.p.mode == "live":
            preds = self._predict_frame(self._history_frame())
            return preds.get(day)
        return self.predictions.get(day)

    # ------------------------------------------------------------------ decisions
    def on_bar(self) -> None:
        if self.session_bar() != self.n_candles - 1 or self.has_position():
            return
        got = self.probability()
        if got is None:
            return
        p, atr = got
        from mltrade.models.ncp.scoring import directions
        raw = int(directions(np.array([p]), self.threshold)[0])
        direction = int(self.adaptation.apply(np.array([raw]), np.array([atr]))[0])
        action = self.adaptation.actions[int(self.adaptation.bin_of(np.array([atr]))[0])]
        price = float(self.data.close[0])
        info = {"p_long": p, "atr": atr, "model_direction": raw, "atr_action": action}
        if direction == 0:
            self.decisions.append({"time": str(self.data.datetime.datetime(0)), "price": price,
                                   "ml_direction": raw, "direction": 0, "source": "ncp",
                                   **{f"info_{k}": v for k, v in info.items()}})
            return
        distance = confidence_distance(p, self.p.distance, self.p.confidence_distances)
        self.submit_decision(Decision(direction=direction, price=price, time=self.data.datetime.datetime(0),
                                      distance=distance, stop=self.p.stop, source="ncp", info=info))
