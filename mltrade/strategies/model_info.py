"""What a backtest must know about a strategy's model before it runs: its id, out-of-sample start, session kind.

One small lookup (:func:`model_scope`) that reads the model's metadata files
defensively (a missing key gives ``None``, never a crash), so that the backtest
can start at the holdout, refuse in-sample ranges and give the baselines the
strategy's session kind. Keys read (written by the training pipelines):

* DQN (``<model dir>/<session>/settings.json``): ``test_start`` (holdout start),
  ``val_end`` (last validation session), ``n_candles``;
* NCP (``<model dir>/ncp.json``): ``metrics.holdout[0]`` (holdout start),
  ``metrics.train``/``val``/``search``/``adaptation_range`` (in-sample ranges, their
  last dates), ``settings.n_candles``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pandas as pd

#: session kinds a strategy (and its baselines) trade
SESSION_KINDS = ("intraday", "day", "night")


@dataclass
class ModelScope:
    """A strategy's model and the range it may be scored on (``None`` fields: no model or unknown)."""

    strategy: str
    session: str = "intraday"          #: intraday (decide after ``decision_bar`` candles), day or night
    decision_bar: int = 17             #: intraday: candles seen before the decision
    model_id: Optional[str] = None     #: "<name>/<version folder>" in the registry
    model_dir: Optional[Path] = None
    oos_start: Optional[str] = None    #: first out-of-sample (holdout) session, YYYY-MM-DD
    in_sample_end: Optional[str] = None  #: last session the model was trained, validated or selected on
    missing: bool = False              #: an ML strategy whose model does not exist yet

    @property
    def has_model(self) -> bool:
        """True for a strategy with a (found) fitted model."""
        return self.model_dir is not None

    def first_out_of_sample(self) -> Optional[pd.Timestamp]:
        """The first day after the model's training/validation data (else its holdout start)."""
        if self.in_sample_end:
            return pd.Timestamp(self.in_sample_end) + pd.Timedelta(days=1)
        if self.oos_start:
            return pd.Timestamp(self.oos_start)
        return None

    def to_dict(self) -> dict:
        """The fields summary.json carries."""
        return {"model_id": self.model_id, "oos_start": self.oos_start, "in_sample_end": self.in_sample_end,
                "session_kind": self.session}


def _read(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _date(v: Any) -> Optional[str]:
    try:
        return str(pd.Timestamp(str(v)).date()) if v not in (None, "") else None
    except (ValueError, TypeError):
        return None


def _model_id(path: Path, name: str) -> str:
    return f"{name}/{Path(path).name}"


def dqn_scope(params: dict) -> ModelScope:
    """Scope of ``DQNEnsembleStrategy`` with ``params`` (registry, model_name, model_dir, session)."""
    from mltrade.models.registry import ModelRegistry

    session = str(params.get("session", "day"))
    name = str(params.get("model_name", "dqn"))
    path = params.get("model_dir") or ModelRegistry(params.get("registry", ".mltrade/models")).path(name)
    sc = ModelScope("dqn", session=session if session in SESSION_KINDS else "day")
    if path is None or not Path(path).is_dir():
        sc.missing = True
        return sc
    path = Path(path).resolve()
    st = _read(path / session / "settings.json")
    sc.model_dir, sc.model_id = path, _model_id(path, name)
    sc.in_sample_end = _date(st.get("val_end"))
    sc.oos_start = _date(st.get("test_start"))
    if sc.oos_start is None and sc.in_sample_end:
        sc.oos_start = str((pd.Timestamp(sc.in_sample_end) + pd.Timedelta(days=1)).date())
    sc.decision_bar = int(st.get("n_candles", 17) or 17)
    return sc


def ncp_scope(params: dict) -> ModelScope:
    """Scope of ``NCPStrategy`` with ``params`` (model_path, or model + meta)."""
    sc = ModelScope("ncp", session="intraday")
    meta = params.get("meta") if params.get("model") is not None else None
    if meta is None:
        p = Path(str(params.get("model_path", ".mltrade/models/ncp/current")))
        d = p if p.suffix != ".keras" else p.parent
        if not (d / "ncp.json").is_file():
            sc.missing = True
            return sc
        d = d.resolve()
        meta = _read(d / "ncp.json")
        sc.model_dir, sc.model_id = d, _model_id(d, "ncp")
    else:
        sc.model_dir, sc.model_id = Path("."), "ncp/(in memory)"
    m = meta.get("metrics", {}) if isinstance(meta.get("metrics"), dict) else {}
    hold = m.get("holdout") or []
    sc.oos_start = _date(hold[0]) if hold else None
    ends = [_date(r[1]) for r in (m.get(k) for k in ("train", "val", "search", "adaptation_range"))
            if isinstance(r, (list, tuple)) and len(r) == 2]
    ends = [e for e in ends if e and (sc.oos_start is None or e < sc.oos_start)]
    sc.in_sample_end = max(ends) if ends else None
    sc.decision_bar = int((meta.get("settings") or {}).get("n_candles", 17) or 17)
    return sc


def model_scope(strategy: str, params: dict) -> ModelScope:
    """The scope of strategy ``strategy`` run with ``params`` (rule strategies: no model, intraday)."""
    if strategy == "dqn":
        return dqn_scope(params)
    if strategy == "ncp":
        return ncp_scope(params)
    return ModelScope(strategy, session="intraday", decision_bar=int(params.get("decision_bar", 17) or 17))
