"""The ``[ncp]`` settings (:class:`NCPSettings`): validated at construction, with the certificate from ``[product]``."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from mltrade.models.ncp.dataset import PayoffSpec
from mltrade.models.ncp.history import load_daily_history
from mltrade.models.registry import ModelRegistry
from mltrade.settings import section, shipped_section


OBJECTIVES = ("product", "sharpe")
LOSSES = ("weighted", "bce")
#: settings that do not change what a trial's score means (a study may resume with other values)
_RUN_ONLY = {"trials", "storage", "state_dir", "search_seed", "study", "jobs", "threads", "jit_compile",
             "dataset_cache", "model_name"}
#: version of the fold layout (:func:`split`); a study run under another layout is not resumed
LAYOUT = 2
#: the certificate keys taken from ``[product]`` (their defaults are that section's)
_PRODUCT_KEYS = ("ratio", "spread", "fx", "kind", "barrier_buffer")
_PRODUCT = shipped_section("product")


@section("ncp", own=_PRODUCT_KEYS)
class NCPSettings:
    """The ``[ncp]`` config section (defaults: ``config.d/ncp.toml``) plus the certificate from ``[product]``."""

    data: str
    start: str
    end: str
    seed: int
    exchange: str
    interval: int
    n_candles: int
    distance: float
    seq_distance: float
    stop: float
    cell: str
    objective: str
    threshold: float
    n_folds: int
    train_sessions: int  #: fold training window; with ``expanding`` the first fold's minimum
    expanding: bool  #: training windows start at the first session (all history before)
    loss: str  #: "bce": cross-entropy; "weighted": weighted by |r_long - r_short|
    class_balance: bool  #: both classes carry the same total weight in the loss
    seeds: int  #: models per fit with different seeds, probabilities averaged
    val_sessions: int
    score_sessions: int
    embargo: int
    holdout_sessions: int
    max_epochs: int
    patience: int
    trials: int
    storage: str
    study: str
    search_seed: int
    state_dir: str
    model_name: str
    atr_bins: int
    adapt_min_count: int
    adapt: bool
    ratio: float = _PRODUCT["ratio"]
    spread: float = _PRODUCT["spread"]
    fx: float = _PRODUCT["fx"]
    kind: str = _PRODUCT["kind"]
    barrier_buffer: float = _PRODUCT["barrier_buffer"]
    daily_history: str  #: daily CSV before the data, for indicator warm-up ("" = none)
    jobs: int  #: search worker processes here (0 = one per CPU core; 1 on a GPU)
    threads: int  #: TensorFlow CPU threads per worker (0 = TensorFlow's default)
    jit_compile: str  #: XLA-compile the train step: "auto" (GPU only), "on", "off"
    dataset_cache: bool  #: keep built datasets under state_dir/cache (keyed by data + settings)

    def __post_init__(self) -> None:
        if self.daily_history:
            load_daily_history(self.daily_history, "ncp.daily_history")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"ncp.objective: expected one of {OBJECTIVES}, got {self.objective!r}")
        if not 0.5 <= self.threshold < 1:
            raise ValueError(f"ncp.threshold: expected a value in [0.5, 1), got {self.threshold!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"ncp.loss: expected one of {LOSSES}, got {self.loss!r}")
        if isinstance(self.seeds, bool) or int(self.seeds) < 1:
            raise ValueError(f"ncp.seeds: expected a positive integer, got {self.seeds!r}")
        if self.cell not in ("ltc", "cfc"):
            raise ValueError(f"ncp.cell: expected 'ltc' or 'cfc', got {self.cell!r}")
        if str(self.jit_compile) not in ("auto", "on", "off"):
            raise ValueError(f"ncp.jit_compile: expected 'auto', 'on' or 'off', got {self.jit_compile!r}")
        for k in ("jobs", "threads"):
            if isinstance(getattr(self, k), bool) or int(getattr(self, k)) < 0:
                raise ValueError(f"ncp.{k}: expected an integer >= 0, got {getattr(self, k)!r}")
        for k in ("n_folds", "train_sessions", "score_sessions", "holdout_sessions", "max_epochs",
                  "n_candles"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"ncp.{k}: expected a positive integer, got {getattr(self, k)!r}")

    @classmethod
    def from_config(cls, cfg: dict) -> "NCPSettings":
        """Settings from a loaded config (``[ncp]`` and the certificate keys of ``[product]``)."""
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in cfg.get("product", {}).items() if k in _PRODUCT_KEYS}
        for k, v in cfg.get("ncp", {}).items():
            if k not in known:
                raise ValueError(f"ncp.{k}: unknown key; valid: {', '.join(sorted(known))}")
            kw[k] = v
        return cls(**kw)

    def payoff(self) -> PayoffSpec:
        return PayoffSpec(distance=self.distance, stop=self.stop, ratio=self.ratio, spread=self.spread,
                          fx=self.fx, kind=self.kind, barrier_buffer=self.barrier_buffer)

    def storage_url(self) -> str:
        if self.storage:
            return self.storage
        path = Path(self.state_dir) / "optuna" / "ncp.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"

    def registry(self) -> ModelRegistry:
        return ModelRegistry(Path(self.state_dir) / "models")

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}
