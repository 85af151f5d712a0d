"""Training, walk-forward Optuna search and the one-time holdout evaluation of the NCP model.

Layout in sessions (chronological, see :mod:`mltrade.models.walkforward` and :func:`split`)::

    [ search region: walk-forward folds (train | val | scored) ... ][emb][ final val ][emb][ holdout ]

Each trial trains one model per fold (early stopping on the fold's val range)
and is scored by the knock-out strategy's performance on the fold's scored
range. Selection (the Optuna trial, the registry's keep/replace) uses these
validation scores only. The final model is trained on the sessions before its
own early-stopping window ("final val", after the search region); the ATR
adaptation is estimated on the fold models' scored ranges (out of fold, never a
model's own early-stopping window). The holdout is touched once per model, to
score and report it; nothing is chosen by it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import pandas as pd

from mltrade.models.ncp.adapt import ATRAdaptation, fit_adaptation
from mltrade.models.ncp.dataset import NCPDataset, PayoffSpec, build_dataset, feature_source
from mltrade.models.ncp.model import (NCPConfig, average_models, build_model, fit_skip_logistic,
                                     predict_proba, save_model, set_input_stats)
from mltrade.models.registry import ModelRegistry, write_json_atomic
from mltrade.models.walkforward import Fold, walk_forward_folds

OBJECTIVES = ("product", "sharpe")
LOSSES = ("weighted", "bce")
#: settings that do not change what a trial's score means (a study may resume with other values)
_RUN_ONLY = {"trials", "storage", "state_dir", "search_seed", "study", "jobs", "threads", "jit_compile",
             "dataset_cache", "model_name"}
#: version of the fold layout (:func:`split`); a study run under another layout is not resumed
LAYOUT = 2
ARTIFACT = "ncp.json"
MODEL_FILE = "model.keras"


@dataclass
class NCPSettings:
    """The ``[ncp]`` config section plus the certificate from ``[product]``."""

    data: str = "sample"
    start: str = "2012-01-01"
    end: str = "2018-12-31"
    seed: int = 42
    exchange: str = "XNAS"
    interval: int = 5
    n_candles: int = 17
    distance: float = 0.04
    seq_distance: float = 0.04
    stop: float = 0.71
    cell: str = "ltc"
    objective: str = "product"
    threshold: float = 0.5
    n_folds: int = 2
    train_sessions: int = 250     #: fold training window; with ``expanding`` the first fold's minimum
    expanding: bool = True        #: training windows start at the first session (all history before)
    loss: str = "bce"             #: "bce": cross-entropy; "weighted": weighted by |r_long - r_short|
    class_balance: bool = False   #: both classes carry the same total weight in the loss
    seeds: int = 2                #: models per fit with different seeds, probabilities averaged
    val_sessions: int = 120
    score_sessions: int = 120
    embargo: int = 1
    holdout_sessions: int = 120
    max_epochs: int = 20
    patience: int = 4
    trials: int = 20
    storage: str = ""
    study: str = "ncp"
    search_seed: int = 0
    state_dir: str = ".mltrade"
    model_name: str = "ncp"
    atr_bins: int = 3
    adapt_min_count: int = 20
    adapt: bool = True
    ratio: float = 0.01
    spread: float = 0.01
    fx: float = 1.0
    kind: str = "turbo"
    barrier_buffer: float = 0.0
    daily_history: str = ""       #: daily CSV before the data, for indicator warm-up ("" = none)
    jobs: int = 0                 #: search worker processes here (0 = one per CPU core; 1 on a GPU)
    threads: int = 1              #: TensorFlow CPU threads per worker (0 = TensorFlow's default)
    jit_compile: str = "auto"     #: XLA-compile the train step: "auto" (GPU only), "on", "off"
    dataset_cache: bool = True    #: keep built datasets under state_dir/cache (keyed by data + settings)

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
        kw = {k: v for k, v in cfg.get("product", {}).items() if k in ("ratio", "spread", "fx", "kind",
                                                                         "barrier_buffer")}
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


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------
def load_bars(s: NCPSettings) -> pd.DataFrame:
    """The intraday bars the settings name (sample, CSV file or twelvedata:SYMBOL cache), cut to start/end."""
    from mltrade.backtest import bars_for

    return bars_for(s.data, s.start, s.end, seed=int(s.seed), interval=int(s.interval), field="ncp")


def load_daily_history(path: str, field: str = "daily_history") -> pd.DataFrame:
    """Daily bars from a CSV file (checked by :func:`mltrade.feeds.loader.load_csv`; dates without a UTC
    offset are read as UTC), at most one row per date. Errors name ``field`` and the file."""
    from mltrade.feeds.loader import DataFileError, load_csv
    try:
        try:
            df = load_csv(path)
        except DataFileError as exc:
            if "has no timezone" not in str(exc):
                raise
            df = load_csv(path, tz="UTC")
    except DataFileError as exc:
        raise ValueError(f"{field}: {exc}") from exc
    days = pd.DatetimeIndex(df.index).tz_localize(None).normalize()
    if days.has_duplicates:
        raise ValueError(f"{field}: {path}: expected daily bars (one row per date), "
                         f"found several rows on {days[days.duplicated()][0].date()}")
    return df


def daily_history_for(bars: pd.DataFrame, path: str = "") -> Optional[pd.DataFrame]:
    """Daily bars before ``bars`` for indicator warm-up: the real sample dailies for the sample data,
    else the daily CSV at ``path`` (``[ncp] daily_history``; "" = none)."""
    if "arch.data.nasdaq" in str(bars.attrs.get("source", "")):
        from mltrade.feeds.sample import load_daily
        return load_daily()
    if path:
        return load_daily_history(path)
    return None


def dataset_for(s: NCPSettings, bars: Optional[pd.DataFrame] = None,
                daily_history: Optional[pd.DataFrame] = None) -> NCPDataset:
    """One sample per session of the configured data (sample data: real daily history for the warm-up)."""
    bars = load_bars(s) if bars is None else bars
    if daily_history is None:
        daily_history = daily_history_for(bars, s.daily_history)
    return build_dataset(bars, n_candles=s.n_candles, spec=s.payoff(), calendar=s.exchange,
                         interval=s.interval, seq_distance=s.seq_distance, daily_history=daily_history)


#: settings that change the dataset (the cache key holds them, the data's fingerprint and the code's)
_DATASET_KEYS = ("data", "start", "end", "seed", "exchange", "interval", "n_candles", "distance",
                 "seq_distance", "stop", "ratio", "spread", "fx", "kind", "barrier_buffer", "daily_history")
_DATASET_CODE = ("feeds/sample.py", "feeds/loader.py", "models/features.py", "models/ncp/dataset.py",
                 "calendars.py", "products.py")


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dataset_key(s: NCPSettings) -> Optional[str]:
    """Hash of the data (file contents; the generator's code for the sample), the dataset settings and the
    feature code, or None when the data can't be fingerprinted without loading it (e.g. twelvedata:)."""
    import mltrade
    root = Path(mltrade.__file__).parent
    parts = {k: getattr(s, k) for k in _DATASET_KEYS}
    if s.data != "sample":
        if not os.path.isfile(s.data):
            return None
        parts["data_digest"] = _file_digest(s.data)
    if s.daily_history:
        parts["daily_history_digest"] = _file_digest(s.daily_history)
    parts["code"] = {c: _file_digest(str(root / c)) for c in _DATASET_CODE if (root / c).exists()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def save_dataset(ds: NCPDataset, path: str) -> str:
    """Write a dataset as ``.npz`` atomically (temp file + ``os.replace``); returns the path."""
    path = str(path)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-ncp-", suffix=".npz", dir=d)
    os.close(fd)
    try:
        np.savez(tmp, dates=np.asarray(ds.dates).astype("datetime64[D]"), daily=ds.daily, seq=ds.seq,
                 atr=ds.atr, price=ds.price, label=ds.label, long_return=ds.long_return,
                 short_return=ds.short_return, long_exit=np.asarray(ds.long_exit, str),
                 short_exit=np.asarray(ds.short_exit, str), feature_names=np.asarray(ds.feature_names, str))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_dataset(path: str) -> NCPDataset:
    """A dataset written by :func:`save_dataset` (errors name the file)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable NCP dataset cache ({exc})") from exc
    need = {"dates", "daily", "seq", "atr", "price", "label", "long_return", "short_return", "long_exit",
            "short_exit", "feature_names"}
    if need - set(a):
        raise ValueError(f"{path}: NCP dataset cache misses {sorted(need - set(a))}")
    return NCPDataset(a["dates"], a["daily"], a["seq"], a["atr"], a["price"],
                      [str(x) for x in a["feature_names"]],
                      a["label"], a["long_return"], a["short_return"], a["long_exit"].astype(object),
                      a["short_exit"].astype(object))


def cached_dataset(s: NCPSettings, log: Callable[[str], None] = lambda m: None) -> NCPDataset:
    """:func:`dataset_for`, through the on-disk cache under ``state_dir/cache`` (keyed by
    :func:`dataset_key`); workers on one machine build it once and share it."""
    key = dataset_key(s) if s.dataset_cache else None
    if key is None:
        return dataset_for(s)
    path = Path(s.state_dir) / "cache" / f"ncp-dataset-{key}.npz"
    if path.exists():
        try:
            ds = load_dataset(str(path))
            log(f"dataset: {len(ds)} sessions from the cache {path}")
            return ds
        except ValueError as exc:
            log(f"dataset cache unreadable, rebuilding: {exc}")
    ds = dataset_for(s)
    save_dataset(ds, str(path))
    log(f"dataset: {len(ds)} sessions built, cached in {path}")
    return ds


def split(ds: NCPDataset, s: NCPSettings) -> Tuple[list, Fold]:
    """Search folds, and the final fold: train | its own early-stopping val | holdout (test).

    The search region ends ``embargo`` sessions before the final val, which ends ``embargo`` sessions
    before the holdout: selection (folds' scored ranges), early stopping of the final model and the
    holdout never share a session.
    """
    n = len(ds)
    final = walk_forward_folds(np.arange(n), 1, s.train_sessions, s.val_sessions, s.holdout_sessions,
                               s.embargo, expanding=bool(s.expanding))[0]
    n_search = final.val_start - s.embargo if s.val_sessions > 0 else final.test_start - s.embargo
    folds = walk_forward_folds(np.arange(max(n_search, 0)), s.n_folds, s.train_sessions, s.val_sessions,
                               s.score_sessions, s.embargo, expanding=bool(s.expanding))
    return folds, final


def selection_range(ds: NCPDataset, folds: list) -> list:
    """First and last session of the folds' scored ranges (where trials and models are compared)."""
    return [str(ds.dates[folds[0].test_start]), str(ds.dates[folds[-1].test_stop - 1])]


# --------------------------------------------------------------------------
# strategy performance of predictions
# --------------------------------------------------------------------------
def directions(prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """+1 where P(long) >= threshold, -1 where P(long) <= 1-threshold (strictly below 0.5 at 0.5), else 0."""
    p = np.asarray(prob, float)
    long_ = p >= threshold
    short = (p < 0.5) if threshold == 0.5 else (p <= 1 - threshold)
    return np.where(long_, 1, np.where(short, -1, 0))


def trade_returns(direction: np.ndarray, ds: NCPDataset) -> np.ndarray:
    """Per-session certificate return of the chosen direction (0 where no trade)."""
    d = np.asarray(direction)
    return np.where(d > 0, ds.long_return, np.where(d < 0, ds.short_return, 0.0))


def score(returns: np.ndarray, objective: str = "product", traded: Optional[np.ndarray] = None) -> float:
    """``product``: log of the product of per-trade exit/entry ratios; ``sharpe``: annualised mean/std."""
    r = np.asarray(returns, float)
    if traded is not None:
        r_tr = r[np.asarray(traded, bool)]
    else:
        r_tr = r
    if objective == "product":
        return float(np.log(np.maximum(1.0 + r_tr, 1e-9)).sum())
    if objective == "sharpe":
        sd = r.std()
        return float(r.mean() / r.std(ddof=1) * math.sqrt(252)) if sd > 0 and len(r) > 1 else 0.0  # ddof 1 (one convention)
    raise ValueError(f"objective: expected one of {OBJECTIVES}, got {objective!r}")


def performance(direction: np.ndarray, ds: NCPDataset, objective: str) -> dict:
    """Figures of one set of directions over ``ds``'s sessions."""
    d = np.asarray(direction)
    r = trade_returns(d, ds)
    traded = d != 0
    hits = (r > 0)[traded]
    return {"objective": score(r, objective, traded), "log_product": score(r, "product", traded),
            "sharpe": score(r, "sharpe"), "trades": int(traded.sum()), "sessions": int(len(d)),
            "hit_rate": float(hits.mean()) if len(hits) else float("nan"),
            "mean_return": float(r[traded].mean()) if traded.any() else 0.0,
            "direction_accuracy": float((np.sign(d[traded]) == np.where(ds.label[traded] > 0, 1, -1)).mean())
            if traded.any() else float("nan")}


def baselines(ds: NCPDataset, objective: str, seed: int = 7, draws: int = 200) -> Dict[str, dict]:
    """Always-long, always-short, random direction (mean of ``draws``), buy-and-hold: same sessions."""
    out = {"always_long": performance(np.ones(len(ds), int), ds, objective),
           "always_short": performance(-np.ones(len(ds), int), ds, objective)}
    rng = np.random.default_rng(seed)
    runs = [performance(rng.choice([-1, 1], len(ds)), ds, objective) for _ in range(draws)]
    out["random_direction"] = {k: float(np.nanmean([r[k] for r in runs])) for k in runs[0]}
    # buy-and-hold of the index over the range: first decision price to last decision price
    if len(ds) > 1:
        bh = ds.price[-1] / ds.price[0] - 1.0
        out["buy_and_hold_index"] = {"objective": float(np.log1p(bh)), "log_product": float(np.log1p(bh)),
                                     "sharpe": float("nan"), "trades": 1, "sessions": int(len(ds)),
                                     "hit_rate": float(bh > 0), "mean_return": float(bh),
                                     "direction_accuracy": float("nan")}
    return out


# --------------------------------------------------------------------------
# model fitting
# --------------------------------------------------------------------------
#: a small network (the linear skip carries what a logistic regression finds; see NCPConfig.skip)
DEFAULT_PARAMS: Dict[str, Any] = {
    "dense1": 16, "dense2": 8, "dense_dropout": 0.1, "dense_slope": 0.1, "ltc_units": 8, "ltc_units2": 6,
    "branch_head": 2, "head_units": 4, "head_dropout": 0.1, "head_slope": 0.1, "learning_rate": 3e-3,
    "weight_decay": 1e-3, "skip_l2": 0.03, "epochs": 20, "batch_size": 64,
}


def config_from_params(params: Dict[str, Any], n_daily: int, s: NCPSettings, seed: int = 0) -> NCPConfig:
    """``NCPConfig`` from a flat parameter dict (Optuna's or :data:`DEFAULT_PARAMS`)."""
    p = {**DEFAULT_PARAMS, **params}
    return NCPConfig(n_daily=n_daily, n_candles=s.n_candles, cell=p.get("cell", s.cell),
                     dense_units=(int(p["dense1"]), int(p["dense2"])),
                     dense_dropout=float(p["dense_dropout"]),
                     dense_slope=float(p["dense_slope"]), ltc_units=int(p["ltc_units"]),
                     ltc_units2=int(p["ltc_units2"]), branch_head=int(p["branch_head"]),
                     head_units=int(p["head_units"]), head_dropout=float(p["head_dropout"]),
                     head_slope=float(p["head_slope"]), learning_rate=float(p["learning_rate"]),
                     weight_decay=float(p.get("weight_decay", 0.0)), skip_l2=float(p.get("skip_l2", 0.0)),
                     skip_fit=str(p.get("skip_fit", "logistic")),
                     residual_z=float(p.get("residual_z", NCPConfig.residual_z)), seed=seed)


def configure_tensorflow(threads: int = 1) -> str:
    """Set TensorFlow's CPU thread pools (before its first op; later calls leave them) and return the
    device training runs on: ``"GPU:0 (<name>)"`` when TensorFlow sees a GPU, else ``"CPU"``."""
    import tensorflow as tf
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(int(threads))
        except RuntimeError:
            pass  # TensorFlow already started: its pools stay as they are
    return device_name()


def device_name() -> str:
    """The device TensorFlow trains on: the first visible GPU (name), else CPU with its core count."""
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        try:
            name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)
        except (ValueError, RuntimeError):
            name = gpus[0].name
        return f"GPU:0 ({name})"
    return f"CPU ({os.cpu_count()} cores)"


def use_jit(setting: str) -> bool:
    """Whether the train step is XLA-compiled: ``auto`` = only on a GPU (on CPU the compile of the
    recurrent cell costs more than it saves over a trial's epochs; see benchmarks/bench_ncp.py)."""
    if setting == "on":
        return True
    if setting == "off":
        return False
    return device_name().startswith("GPU")


class _History:
    """Per-epoch losses, shaped like Keras' ``History`` (``.history["loss"]``, ``["val_loss"]``)."""

    def __init__(self) -> None:
        self.history: Dict[str, list] = {"loss": [], "val_loss": []}


def _bce(y: np.ndarray, p: np.ndarray, w: Optional[np.ndarray] = None) -> float:
    p = np.clip(np.asarray(p, float), 1e-7, 1 - 1e-7)
    y = np.asarray(y, float)
    ll = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    return float(ll.mean() if w is None else (ll * w).sum() / max(float(np.sum(w)), 1e-12))


def _session_bce(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-session cross-entropy."""
    p = np.clip(np.asarray(p, float), 1e-7, 1 - 1e-7)
    y = np.asarray(y, float)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def _significant_gain(gain: np.ndarray, z: float) -> bool:
    """Whether per-session loss gains (weighted) have a mean above ``z`` standard errors (paired, one-sided;
    ``z`` = 0: any positive mean gain)."""
    g = np.asarray(gain, float)
    if len(g) == 0 or g.mean() <= 0:
        return False
    return z <= 0 or (len(g) > 1 and g.mean() > z * g.std(ddof=1) / math.sqrt(len(g)))


def sample_weights(ds: NCPDataset, loss: str = "weighted", class_balance: bool = True) -> np.ndarray:
    """Per-session loss weights (mean 1): ``weighted`` = |log(1+r_long) - log(1+r_short)|, what choosing the
    wrong side of the session costs in the objective (log-product), so the loss is the trading objective's
    cost-sensitive classification; ``class_balance`` gives both classes the same total weight."""
    n = len(ds)
    if n == 0:
        return np.zeros(0, "float32")
    if loss == "weighted":
        gl = np.log(np.maximum(1.0 + np.asarray(ds.long_return, float), 1e-9))
        gs = np.log(np.maximum(1.0 + np.asarray(ds.short_return, float), 1e-9))
        w = np.abs(gl - gs)
        w = w + 1e-3 * (w.mean() if w.mean() > 0 else 1.0)  # no session is worth exactly nothing
    elif loss == "bce":
        w = np.ones(n)
    else:
        raise ValueError(f"loss: expected one of {LOSSES}, got {loss!r}")
    if class_balance:
        y = np.asarray(ds.label) > 0
        if y.any() and (~y).any():
            half = 0.5 * w.sum()
            w = np.where(y, w * half / w[y].sum(), w * half / w[~y].sum())
    return (w / w.mean()).astype("float32")


class FoldTrainer:
    """One model re-used across folds: weights, optimizer state and input statistics are reset per fit.

    Training is a compiled custom loop: the train step is traced once per model (every batch has the
    same shape: the last one is filled with rows of zero weight), validation loss and predictions come
    from one compiled forward pass (:func:`predict_proba`), early stopping restores the best epoch.
    """

    def __init__(self, cfg: NCPConfig, epochs: int, batch_size: int, patience: int,
                 jit_compile: bool = False, loss: str = "bce", class_balance: bool = False) -> None:
        import tensorflow as tf
        self.cfg, self.epochs = cfg, int(epochs)
        self.loss, self.class_balance = loss, bool(class_balance)
        self.batch_size, self.patience = int(batch_size), int(patience)
        self.model = build_model(cfg)
        #: the skip solved as a logistic regression before the network trains (then frozen: the optimizer,
        #: its weight decay included, only sees the network's weights)
        self.skip_logistic = bool(cfg.skip) and cfg.skip_fit == "logistic"
        frozen = {id(v) for v in self.model.get_layer("skip_logit").trainable_variables} \
            if self.skip_logistic else set()
        self._vars = [v for v in self.model.trainable_variables if id(v) not in frozen]
        self.model.optimizer.build(self._vars)
        self._w0 = self.model.get_weights()
        self._opt0 = [v.numpy() for v in self.model.optimizer.variables]
        self.epochs_run = 0            #: epochs trained by all fits of this trainer
        self.train_seconds = 0.0       #: time spent in those epochs (compile included)
        model, opt, tvars = self.model, self.model.optimizer, self._vars

        def step(xd, xs, y, w):
            with tf.GradientTape() as tape:
                p = tf.reshape(model([xd, xs], training=True), [-1])
                p = tf.clip_by_value(p, 1e-7, 1 - 1e-7)
                ll = -(y * tf.math.log(p) + (1 - y) * tf.math.log(1 - p))
                loss = tf.reduce_sum(ll * w) / tf.reduce_sum(w)
                if model.losses:  # the skip's L2 penalty
                    loss = loss + tf.add_n(model.losses)
            grads = tape.gradient(loss, tvars)
            opt.apply(grads, tvars)
            return loss

        # plain tensor code: no AutoGraph conversion (it can't read the closure and would warn)
        self._step = tf.function(tf.autograph.experimental.do_not_convert(step),
                                 jit_compile=bool(jit_compile), reduce_retracing=True)

    def fit(self, train: NCPDataset, val: Optional[NCPDataset] = None, verbose: int = 0):
        """Train from the initial weights on ``train`` (early stopping on the same weighted loss on
        ``val``, best epoch restored); ``verbose`` shows a progress bar of the epochs. Returns the model."""
        import keras
        keras.utils.set_random_seed(self.cfg.seed)  # each fit is reproducible, whatever ran before
        t0 = time.perf_counter()
        self.model.set_weights(self._w0)
        for v, x in zip(self.model.optimizer.variables, self._opt0):
            v.assign(x)
        set_input_stats(self.model, train.daily, train.seq)
        xd = np.nan_to_num(np.asarray(train.daily, "float32"))
        xs = np.nan_to_num(np.asarray(train.seq, "float32"))
        y = np.asarray(train.label, "float32")
        n = len(y)
        bs = max(1, min(self.batch_size, n))
        nb = -(-n // bs)
        rng = np.random.default_rng(self.cfg.seed)
        sw = sample_weights(train, self.loss, self.class_balance)
        vw = sample_weights(val, self.loss, self.class_balance) if val is not None and len(val) else None
        pad = np.ones(nb * bs, "float32")
        pad[n:] = 0.0
        self.history = _History()
        best, best_w, wait = math.inf, None, 0
        self.skip_info: dict = {}
        if self.skip_logistic:
            # the skip first, to convergence; the network's output starts at zero, so the model is now that
            # logistic regression, and early stopping keeps it unless an epoch lowers the validation loss
            has_val = val is not None and len(val) > 0
            self.skip_info = fit_skip_logistic(self.model, self.cfg, train.daily, train.seq, train.label, sw,
                                               (val.daily, val.seq, val.label, vw) if has_val else None)
            if has_val:
                p0 = predict_proba(self.model, val.daily, val.seq)
                best = _bce(val.label, p0, vw)
                best_w = self.model.get_weights()
                self.history.history["val_loss_start"] = [best]
                ll0 = _session_bce(val.label, p0) * (1.0 if vw is None else vw)
        kept = best   # validation loss of the weights kept (restored at the end)
        bar = None
        if verbose:
            from tqdm.auto import tqdm
            bar = tqdm(total=self.epochs, desc=f"NCP training (seed {self.cfg.seed})", unit="epoch",
                       leave=False)
        for epoch in range(self.epochs):
            perm = rng.permutation(n)
            idx = np.concatenate([perm, perm[:nb * bs - n]])
            losses = [float(self._step(xd[j], xs[j], y[j], sw[j] * pad[b * bs:(b + 1) * bs]))
                      for b, j in enumerate(np.split(idx, nb))]
            self.history.history["loss"].append(float(np.mean(losses)))
            self.epochs_run += 1
            if val is not None and len(val):
                pv = predict_proba(self.model, val.daily, val.seq)
                vl = _bce(val.label, pv, vw)
                self.history.history["val_loss"].append(vl)
                if bar is not None:
                    bar.set_postfix(loss=f"{np.mean(losses):.4f}", val_loss=f"{vl:.4f}")
                    bar.update(1)
                if vl < best:
                    best, wait = vl, 0
                    # over the logistic skip, the network's epoch is kept only when it lowers the
                    # validation loss by residual_z standard errors of the per-session gain (paired)
                    if not self.skip_logistic or _significant_gain(
                            ll0 - _session_bce(val.label, pv) * (1.0 if vw is None else vw), self.cfg.residual_z):
                        kept, best_w = vl, self.model.get_weights()
                else:
                    wait += 1
                    if wait >= self.patience:
                        break
            elif bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        if best_w is not None:
            self.model.set_weights(best_w)
        self.val_loss = kept   #: validation loss of the returned weights (inf without validation)
        self.train_seconds += time.perf_counter() - t0
        return self.model


def constant_output(direction: np.ndarray, prob: np.ndarray) -> Optional[str]:
    """``"long"``, ``"short"`` or ``"none"`` (never trades) when every session gets the same direction,
    ``"constant probability"`` when the probabilities don't vary; else None."""
    d = np.asarray(direction)
    if len(d) == 0:
        return None
    p = np.asarray(prob, float)
    if len(p) > 1 and float(p.max() - p.min()) < 1e-6:
        return "constant probability"
    if (d == d[0]).all():
        return {1: "long", -1: "short", 0: "none"}[int(d[0])]
    return None


def describe_constant(reason: Optional[str], where: str) -> str:
    """Words for :func:`constant_output`'s result ("" when the output varies)."""
    if not reason:
        return ""
    if reason in ("long", "short"):
        return f"always {reason} on {where}"
    if reason == "none":
        return f"never trades on {where}"
    return f"{reason} on {where}"


def make_trainers(params: Dict[str, Any], n_daily: int, s: NCPSettings, seed: int = 0) -> list:
    """``s.seeds`` trainers of ``params`` (seeds ``seed, seed+1, ...``; their probabilities are averaged)."""
    return [FoldTrainer(config_from_params(params, n_daily, s, seed + k),
                        params.get("epochs", DEFAULT_PARAMS["epochs"]),
                        params.get("batch_size", DEFAULT_PARAMS["batch_size"]), s.patience,
                        jit_compile=use_jit(s.jit_compile), loss=s.loss, class_balance=s.class_balance)
            for k in range(int(s.seeds))]


class _Trainers:
    """Epoch and time totals of several trainers (what :func:`evaluate_params` reports)."""

    def __init__(self, trainers: list) -> None:
        self.trainers = trainers

    @property
    def epochs_run(self) -> int:
        return sum(t.epochs_run for t in self.trainers)

    @property
    def train_seconds(self) -> float:
        return sum(t.train_seconds for t in self.trainers)


def fold_predictions(params: Dict[str, Any], fold_data: list, s: NCPSettings, seed: int = 0,
                     report: Optional[Callable[[int, float], bool]] = None,
                     trainer: Optional[Any] = None) -> dict:
    """Train ``params`` on each fold (early stopping on its val; ``s.seeds`` seeds, probabilities
    averaged) and score its scored range.

    ``fold_data``: ``[(train, val, scored), ...]`` datasets (see :func:`fold_datasets`). Returns the
    per-fold objectives, probabilities and directions on the scored ranges and the trainer(s);
    ``report(step, mean so far)`` returning True stops (pruning) after that fold. ``trainer``: a
    :class:`FoldTrainer` or a list of them (default :func:`make_trainers`).
    """
    n_daily = fold_data[0][0].daily.shape[1]
    if trainer is None:
        trainer = make_trainers(params, n_daily, s, seed)
    trainers = trainer if isinstance(trainer, list) else [trainer]
    values, probs, dirs = [], [], []
    for k, (tr, va, sc) in enumerate(fold_data):
        p = np.mean([predict_proba(t.fit(tr, va), sc.daily, sc.seq) for t in trainers], axis=0)
        d = directions(p, s.threshold)
        probs.append(p)
        dirs.append(d)
        values.append(performance(d, sc, s.objective)["objective"])
        if report is not None and report(k, float(np.mean(values))):
            break
    return {"values": values, "probs": probs, "directions": dirs, "trainer": _Trainers(trainers),
            "complete": len(values) == len(fold_data)}


def fold_datasets(ds: NCPDataset, folds: list) -> list:
    """Each fold's (train, val, scored) datasets, cut once per study and reused by every trial."""
    return [(ds.subset(f.train), ds.subset(f.val), ds.subset(f.test)) for f in folds]


def suggest_params(trial, s: NCPSettings) -> Dict[str, Any]:
    """The search space (Optuna trial)."""
    p = {
        "dense1": trial.suggest_int("dense1", 8, 64, log=True),
        "dense2": trial.suggest_int("dense2", 4, 32, log=True),
        "dense_dropout": trial.suggest_float("dense_dropout", 0.0, 0.5),
        "dense_slope": trial.suggest_float("dense_slope", 0.01, 0.3, log=True),
        "ltc_units": trial.suggest_int("ltc_units", 5, 48),
        "ltc_units2": trial.suggest_int("ltc_units2", 5, 24),
        "branch_head": trial.suggest_int("branch_head", 1, 8),
        "head_units": trial.suggest_int("head_units", 4, 32, log=True),
        "head_dropout": trial.suggest_float("head_dropout", 0.0, 0.5),
        "head_slope": trial.suggest_float("head_slope", 0.01, 0.3, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-5, 1e-1, log=True),
        "skip_l2": trial.suggest_float("skip_l2", 1e-3, 0.3, log=True),
        "epochs": trial.suggest_int("epochs", 3, max(3, s.max_epochs)),
        "batch_size": trial.suggest_categorical("batch_size", [16, 32, 64]),
    }
    return p


def evaluate_params(params: Dict[str, Any], ds: NCPDataset, folds: list, s: NCPSettings,
                    report: Optional[Callable[[int, float], bool]] = None, seed: int = 0,
                    fold_data: Optional[list] = None, info: Optional[dict] = None) -> float:
    """Mean scored-range objective over the walk-forward folds; ``report(step, value)`` -> True prunes.

    ``info`` (a dict) receives ``degenerate`` (the reason, or ""), the epochs and seconds trained and
    ``returns``: the per-session returns on the folds' scored ranges (folds in order; what PBO is computed on).
    """
    fd = fold_data or fold_datasets(ds, folds)
    fp = fold_predictions(params, fd, s, seed, report)
    if info is not None:
        reason = constant_output(np.concatenate(fp["directions"]), np.concatenate(fp["probs"]))
        info.update(degenerate=describe_constant(reason, "the validation folds"),
                    epochs=fp["trainer"].epochs_run, seconds=fp["trainer"].train_seconds,
                    returns=np.concatenate([trade_returns(d, fd[k][2]) for k, d in enumerate(fp["directions"])]))
    return float(np.mean(fp["values"]))


@dataclass
class FinalResult:
    """The chosen model, its adaptation, its validation (selection) figures and one-time holdout figures."""

    model: Any
    adaptation: ATRAdaptation
    metrics: dict
    artifact: dict
    kept: bool = False
    path: Optional[str] = None

    @property
    def degenerate(self) -> bool:
        return bool(self.metrics.get("degenerate"))


def _offer(reg: ModelRegistry, name: str, write: Callable[[Path], None], metrics: dict, config: dict,
           selection: list, holdout: list, degenerate: bool) -> bool:
    """Offer to the registry by the validation objective, with its date range and the holdout range (the
    registry refuses a selection range reaching the holdout, and degenerate models)."""
    import inspect
    params = inspect.signature(reg.offer).parameters
    if "selection_range" in params:
        extra = {"degenerate_reason": str(metrics.get("degenerate_reason", ""))} \
            if "degenerate_reason" in params else {}
        return bool(reg.offer(name, write, metrics, config, metric="validation_objective",
                              selection_range=tuple(selection), holdout_range=tuple(holdout),
                              degenerate=bool(degenerate), **extra))
    # a registry without those checks: refuse here what it would refuse
    if degenerate or not selection[1] < holdout[0]:
        return False
    return bool(reg.offer(name, write, metrics, config, metric="validation_objective"))


def train_final(params: Dict[str, Any], ds: NCPDataset, s: NCPSettings, seed: int = 0,
                offer: bool = True, verbose: int = 0, search_pbo: Optional[dict] = None) -> FinalResult:
    """Score the parameters on the validation folds, train the final model, test it once on the holdout.

    * Selection figure (``validation_objective``, what the registry compares): the mean objective of
      one model per search fold on the fold's scored range (early stopping on the fold's own val).
    * ATR adaptation: estimated on those out-of-fold scored-range predictions (never on a model's own
      early-stopping window, never on the holdout).
    * Final model: trained on the sessions before its own early-stopping window (``final val``).
    * Degenerate (not kept): constant direction on the final val or on all the folds' scored ranges.
    * Holdout: scored once, reported (``holdout_constant`` flags a model constant there), never chosen by.
    * ``search_pbo``: the search's Probability of Backtest Overfitting (:func:`search_pbo`), kept in
      ``metrics["pbo"]`` (ncp.json) when the parameters come from a search.
    """
    folds, final = split(ds, s)
    fd = fold_datasets(ds, folds)
    cfg = config_from_params(params, ds.daily.shape[1], s, seed)
    trainers = make_trainers(params, ds.daily.shape[1], s, seed)
    # validation folds: selection figure and out-of-fold directions for the adaptation
    fp = fold_predictions(params, fd, s, seed, trainer=trainers)
    oof_rows = np.concatenate([np.arange(f.test_start, f.test_stop) for f in folds])
    oof_dir = np.concatenate(fp["directions"])
    oof_prob = np.concatenate(fp["probs"])
    sel_range = selection_range(ds, folds)
    adaptation = ATRAdaptation.identity()
    adapt_range: list = []
    if s.adapt:
        adapt_range = list(sel_range)
        est = ds.subset(oof_rows)
        edges = np.quantile(est.atr, np.linspace(0, 1, s.atr_bins + 1)[1:-1])
        adaptation = fit_adaptation(oof_dir, est.atr, est.long_return, est.short_return, s.atr_bins,
                                    s.adapt_min_count, edges)
    # the final model: early stopping on its own window, after the search region
    train, val, test = ds.subset(final.train), ds.subset(final.val), ds.subset(final.test)
    model = average_models([t.fit(train, val, verbose=verbose) for t in trainers])
    history = trainers[0].history
    p_val = predict_proba(model, val.daily, val.seq) if len(val) else np.zeros(0)
    d_val = directions(p_val, s.threshold)
    reasons = [r for r in (describe_constant(constant_output(d_val, p_val),
                                             f"its {len(val)} early-stopping validation sessions"),
                           describe_constant(constant_output(oof_dir, oof_prob),
                                             f"the {len(oof_dir)} sessions of the validation folds")) if r]
    # the holdout: touched once here, to score and report
    p_test = predict_proba(model, test.daily, test.seq)
    d_raw = directions(p_test, s.threshold)
    d_adapt = adaptation.apply(d_raw, test.atr)
    hold_const = constant_output(d_raw, p_test)
    hold_const_adapted = constant_output(d_adapt, p_test)
    val_perf = performance(oof_dir, ds.subset(oof_rows), s.objective)
    metrics = {
        "validation_objective": float(np.mean(fp["values"])),
        "validation_folds": [float(v) for v in fp["values"]],
        "validation": val_perf,
        "selection_range": sel_range,
        "holdout_objective": performance(d_adapt, test, s.objective)["objective"],
        "model": performance(d_raw, test, s.objective),
        "model_adapted": performance(d_adapt, test, s.objective),
        "baselines": baselines(test, s.objective),
        "holdout": [str(test.dates[0]), str(test.dates[-1])],
        "train": [str(train.dates[0]), str(train.dates[-1])],
        "val": [str(val.dates[0]), str(val.dates[-1])] if len(val) else [],
        "early_stopping_range": [str(val.dates[0]), str(val.dates[-1])] if len(val) else [],
        "search": [str(ds.dates[folds[0].train_start]), str(ds.dates[folds[-1].test_stop - 1])],
        "objective": s.objective,
        "epochs_run": len(history.history.get("loss", [])),
        "adaptation_sessions": int(sum(t["count"] for t in adaptation.table)),
        "adaptation_range": adapt_range,
        "degenerate": bool(reasons),
        "degenerate_reason": "; ".join(reasons),
        "holdout_constant": hold_const is not None,
        "holdout_direction": hold_const or "",
        "holdout_constant_adapted": hold_const_adapted is not None,
        "holdout_direction_adapted": hold_const_adapted or "",
        "holdout_long_share": float((d_raw > 0).mean()) if len(d_raw) else float("nan"),
        "device": device_name(),
        "significance": holdout_significance(trade_returns(d_adapt, test), test),
    }
    # the kept model's holdout decisions, so a backtest can reconcile its figure session by session
    if search_pbo is not None:
        metrics["pbo"] = search_pbo
    metrics["holdout_decisions"] = {"dates": [str(x) for x in test.dates], "direction": [int(x) for x in d_adapt]}
    lad = ncp_ladder(ds, folds, final, s, oof_dir, d_raw)
    metrics["ladder"] = lad.to_dict()
    artifact = {"settings": s.to_dict(), "params": {**DEFAULT_PARAMS, **params}, "config": cfg.to_dict(),
                "adaptation": adaptation.to_dict(), "feature_names": list(ds.feature_names),
                "feature_source": feature_source(), "metrics": metrics}
    res = FinalResult(model, adaptation, metrics, artifact)
    if offer:
        reg = s.registry()

        def write(d: Path) -> None:
            save_model(model, str(d / MODEL_FILE))
            write_json_atomic(d / ARTIFACT, artifact)

        reg_metrics = {k: metrics[k] for k in ("validation_objective", "selection_range", "holdout",
                                                "holdout_objective", "degenerate", "degenerate_reason",
                                                "holdout_constant", "holdout_direction", "objective")}
        reg_metrics["holdout_range"] = metrics["holdout"]
        res.kept = _offer(reg, s.model_name, write, reg_metrics,
                          {"settings": s.to_dict(), "params": artifact["params"]},
                          sel_range, metrics["holdout"], bool(reasons))
        p = reg.path(s.model_name)
        res.path = str(p) if p else None
    return res


def ladder_inputs(ds: NCPDataset) -> np.ndarray:
    """The NCP's own inputs as one row per session: the lagged daily features and the first N candles."""
    return np.concatenate([np.asarray(ds.daily, float), np.asarray(ds.seq, float).reshape(len(ds), -1)], axis=1)


def momentum_positions(ds: NCPDataset) -> np.ndarray:
    """The momentum rule on the same sessions: long when the long certificate is up since the open at the
    decision (the index rose over the first N candles), else short."""
    return np.where(np.asarray(ds.seq, float)[:, -1, 2] > 0, 1, -1)


def ncp_ladder(ds: NCPDataset, folds: list, final: Fold, s: NCPSettings, val_dir: np.ndarray,
               hold_dir: np.ndarray, spa_reps: int = 2000):
    """The learner ladder (:mod:`mltrade.models.ladder`) beside the NCP on its inputs and folds: each
    search fold's learners fit its train + early-stopping sessions and are scored on its scored range
    (the NCP's validation sessions); for the holdout they are refitted on every session before it
    (the final model's train + early-stopping sessions). ``val_dir`` / ``hold_dir``: the NCP's directions."""
    from mltrade.models.ladder import Ladder, LadderSplit
    lf = tuple((np.arange(f.train_start, f.val_stop), np.arange(f.test_start, f.test_stop)) for f in folds)
    split_ = LadderSplit(lf, np.arange(final.test_start, final.test_stop),
                         refit=np.arange(final.train_start, final.val_stop if final.val_stop > final.val_start
                                         else final.train_stop))

    def returns_fn(pos: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return trade_returns(pos, ds.subset(rows))

    lad = Ladder(ladder_inputs(ds), split_, returns_fn, rule_positions=momentum_positions(ds),
                 rule_name="momentum", objective="log_product" if s.objective == "product" else "sharpe",
                 seed=int(s.search_seed), spa_reps=spa_reps, y=np.asarray(ds.label) > 0,
                 target="the NCP's label (the long certificate ends above its entry)")
    lad.add_model("ncp", trade_returns(val_dir, ds.subset(split_.validation)),
                  trade_returns(hold_dir, ds.subset(split_.holdout)), val_dir, hold_dir)
    return lad


def holdout_significance(returns: np.ndarray, test: NCPDataset) -> Optional[dict]:
    """Bootstrap intervals of the holdout Sharpe and return, Hansen's SPA p against buy-and-hold of the
    index (decision price to decision price) and always-long on the same sessions
    (:func:`mltrade.significance.significance`); None when that module is absent."""
    try:
        from mltrade.significance import significance
    except ImportError:
        return None
    bh = np.concatenate([[0.0], test.price[1:] / test.price[:-1] - 1.0]) if len(test) else np.zeros(0)
    return significance(np.asarray(returns, float), {"buy_and_hold_index": bh,
                                                    "always_long": np.asarray(test.long_return, float)})


def worker_identity() -> Tuple[str, int]:
    """A unique worker name (host, pid, random) and a sampler seed of its own derived from it."""
    name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return name, int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)


def _study(s: NCPSettings, storage: str, seed: int, n_trials: Optional[int]):
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    startup = min(8, max(2, (n_trials or 8) // 3))
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)
    # prune after the first fold, once two trials have finished
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    return optuna.create_study(study_name=s.study, storage=storage, direction="maximize", sampler=sampler,
                               pruner=pruner, load_if_exists=True)


def _same_params(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(
        (abs(float(a[k]) - float(b[k])) <= 1e-12 * max(1.0, abs(float(a[k]))))
        if isinstance(a[k], (int, float)) and isinstance(b[k], (int, float)) else a[k] == b[k] for k in a)


def run_trials(s: NCPSettings, storage: str, n_trials: int, ds: NCPDataset,
               log: Callable[[str], None] = print, timeout: Optional[float] = None,
               seed: Optional[int] = None, worker: str = "") -> int:
    """One search worker: ``n_trials`` trials against the shared study; returns the number finished.

    The worker has its own identity and sampler seed (``seed`` None = derived from a unique identity),
    so workers started together never propose the same batch; a proposal equal to a trial already
    scored or running is not scored again (it is recorded as pruned, ``duplicate_of``).
    """
    import optuna
    if not worker or seed is None:
        name, wseed = worker_identity()
        worker, seed = worker or name, wseed if seed is None else seed
    study = _study(s, storage, seed, n_trials)
    folds, _ = split(ds, s)
    fd = fold_datasets(ds, folds)  # once per worker, reused by every trial

    def objective(trial) -> float:
        params = suggest_params(trial, s)
        trial.set_user_attr("worker", worker)
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING)
        for other in study.get_trials(deepcopy=False, states=states):
            if other.number != trial.number and _same_params(other.params, trial.params):
                trial.set_user_attr("duplicate_of", other.number)
                log(f"trial {trial.number}: same parameters as trial {other.number}, not scored again")
                raise optuna.TrialPruned()
        t0 = time.time()

        def report(step: int, value: float) -> bool:
            trial.report(value, step)
            return trial.should_prune()

        info: dict = {}
        value = evaluate_params(params, ds, folds, s, report, seed=trial.number, fold_data=fd, info=info)
        rate = info["epochs"] / info["seconds"] if info.get("seconds") else float("nan")
        trial.set_user_attr("degenerate", info["degenerate"])
        trial.set_user_attr("epochs_per_s", rate)
        trial.set_user_attr(RETURNS_ATTR, encode_returns(info["returns"]))
        speed = f"{info['epochs']} epochs, {rate:.2f} epochs/s"
        if trial.should_prune():
            log(f"trial {trial.number}: pruned after the first fold at {value:.4f} "
                f"({time.time() - t0:.1f} s, {speed})")
            raise optuna.TrialPruned()
        flag = f" DEGENERATE ({info['degenerate']})" if info["degenerate"] else ""
        log(f"trial {trial.number}: {s.objective} = {value:.4f}{flag} ({time.time() - t0:.1f} s, {speed})")
        return value

    before = len(study.trials)
    study.optimize(objective, n_trials=n_trials, timeout=timeout, gc_after_trial=True)
    return len(study.trials) - before


def _worker_main(settings: dict, storage: str, n_trials: int, cache: str, timeout: Optional[float]) -> None:
    """Entry point of a spawned search worker process."""
    from mltrade.tfquiet import quiet_tensorflow_in_worker
    quiet_tensorflow_in_worker()   # before TensorFlow's import: no CUDA / start-up lines unless `mltrade -v`
    s = NCPSettings(**settings)
    configure_tensorflow(s.threads)
    run_trials(s, storage, n_trials, load_dataset(cache), log=lambda m: print(m, flush=True), timeout=timeout)


def _jobs(s: NCPSettings) -> int:
    if s.jobs:
        return int(s.jobs)
    import tensorflow as tf
    return 1 if tf.config.list_physical_devices("GPU") else max(1, os.cpu_count() or 1)


#: user attribute holding a trial's per-session validation (scored-range) returns, as the sweep stores them
RETURNS_ATTR = "ncp_returns"


def encode_returns(returns: np.ndarray) -> str:
    """Per-session returns as trial-attribute text (the sweep's encoding, :func:`mltrade.sweep.study.encode_returns`)."""
    from mltrade.sweep.study import encode_returns as enc
    return enc(returns)


def search_pbo(study) -> dict:
    """Probability of Backtest Overfitting of the search (:func:`mltrade.pbo.pbo_or_reason`) over the
    complete trials' per-session validation returns (same sessions: every complete trial ran every fold);
    pruned trials and trials stored before the returns were kept are left out."""
    import optuna
    from mltrade.pbo import pbo_or_reason
    from mltrade.sweep.study import decode_returns
    cols = [decode_returns(t.user_attrs[RETURNS_ATTR]) for t in study.trials
            if t.state == optuna.trial.TrialState.COMPLETE and RETURNS_ATTR in t.user_attrs]
    res = pbo_or_reason(cols)
    res["complete_trials"] = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    return res


def choose_best(study) -> Any:
    """The best completed trial that is not degenerate (a degenerate one only when no other completed)."""
    import optuna
    complete = [t for t in study.trials
                if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
    if not complete:
        raise RuntimeError(f"study {study.study_name!r}: no trial completed; run more trials")
    sound = [t for t in complete if not t.user_attrs.get("degenerate")]
    return max(sound or complete, key=lambda t: t.value)


def optimize(s: NCPSettings, n_trials: Optional[int] = None, storage: Optional[str] = None,
             ds: Optional[NCPDataset] = None, log: Callable[[str], None] = print,
             timeout: Optional[float] = None, jobs: Optional[int] = None) -> Tuple[Any, FinalResult]:
    """Walk-forward Optuna search (resumable, pruned after the first fold, ``jobs`` worker processes),
    then the final model on the best non-degenerate parameters (chosen on validation folds only)."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage or s.storage_url()
    from_settings = ds is None
    ds = cached_dataset(s, log) if ds is None else ds
    split(ds, s)  # a layout that does not fit fails before any trial
    n = int(n_trials if n_trials is not None else s.trials)
    jobs = int(jobs if jobs is not None else _jobs(s))
    study = _study(s, url, s.search_seed, n)
    # an unset daily_history is left out so that studies made before the key existed still resume
    mine = {k: v for k, v in s.to_dict().items()
            if k not in _RUN_ONLY and not (k == "daily_history" and not v)}
    mine["layout"] = LAYOUT
    stored = study.user_attrs.get("settings")
    if stored is not None and stored != mine and study.trials:
        diff = sorted(k for k in set(stored) | set(mine) if stored.get(k) != mine.get(k))
        raise ValueError(f"study {s.study!r} in {url} was run with other settings "
                         f"({', '.join(diff)}): its scores are not comparable; use another --study name")
    study.set_user_attr("settings", mine)
    jobs = max(1, min(jobs, n))
    log(f"search: {n} trials, {jobs} worker(s), device {device_name()}, "
        f"train step {'XLA-compiled' if use_jit(s.jit_compile) else 'graph-compiled'}")
    if jobs == 1:
        # a fresh study in one process is reproducible (seed = search_seed); a resumed one gets a new seed
        seed = s.search_seed if not study.trials else None
        run_trials(s, url, n, ds, log, timeout, seed=seed, worker="" if seed is None else "local")
    else:
        import multiprocessing as mp
        if url.startswith("sqlite:///") and not os.path.isabs(url[len("sqlite:///"):]):
            url = "sqlite:///" + os.path.abspath(url[len("sqlite:///"):])
        cache_dir = Path(s.state_dir) / "cache"
        key = dataset_key(s) if (s.dataset_cache and from_settings) else None
        cache = cache_dir / (f"ncp-dataset-{key}.npz" if key
                             else f"ncp-dataset-run-{uuid.uuid4().hex[:8]}.npz")
        if not cache.exists():
            save_dataset(ds, str(cache))
        ctx = mp.get_context("spawn")
        share = [n // jobs + (1 if i < n % jobs else 0) for i in range(jobs)]
        procs = [ctx.Process(target=_worker_main, args=(s.to_dict(), url, k, str(cache), timeout))
                 for k in share if k]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        if not key:
            cache.unlink(missing_ok=True)
        failed = [p.exitcode for p in procs if p.exitcode]
        if failed:
            log(f"{len(failed)} of {len(procs)} workers failed (exit codes {failed}); their trials are lost")
        study = optuna.load_study(study_name=s.study, storage=url)
    best = choose_best(study)
    why = " (every completed trial is degenerate)" if best.user_attrs.get("degenerate") else ""
    log(f"best trial {best.number} (validation folds): {s.objective} = {best.value:.4f}{why} "
        f"params {best.params}")
    result = train_final(dict(best.params), ds, s, seed=best.number, search_pbo=search_pbo(study))
    return study, result


def best_params(s: NCPSettings, storage: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """Parameters of the best completed trial of the configured study, or None."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=s.study, storage=storage or s.storage_url())
        return dict(choose_best(study).params)
    except (KeyError, ValueError, RuntimeError):
        return None


def format_metrics(m: dict) -> str:
    """Validation (selection) figure, degeneracy, and the holdout figures beside the baselines (text)."""
    out = []
    if "validation_objective" in m:
        out.append(f"validation folds {m['selection_range'][0]} .. {m['selection_range'][1]} "
                   f"(selection): {m['objective']} = {m['validation_objective']:.4f} "
                   f"(per fold {', '.join(f'{v:.4f}' for v in m.get('validation_folds', []))})")
    if m.get("pbo"):
        out.append(f"search overfitting (validation folds, {m['pbo'].get('complete_trials', '?')} complete "
                   f"trials): {m['pbo']['words']}")
    if m.get("degenerate"):
        out.append(f"DEGENERATE model: {m.get('degenerate_reason')} -> not kept")
    rows = [("model", m["model"]), ("model + ATR adaptation", m["model_adapted"])]
    rows += [(k, v) for k, v in m["baselines"].items()]
    out += [f"holdout {m['holdout'][0]} .. {m['holdout'][1]} (out-of-sample, scored once, {m['objective']})",
            f"{'':26s} {'log_product':>11s} {'sharpe':>8s} {'trades':>6s} {'hit':>6s} {'dir.acc':>7s}"]
    for name, v in rows:
        out.append(f"{name:26s} {v['log_product']:11.4f} {v['sharpe']:8.3f} {int(v['trades']):6d} "
                   f"{v['hit_rate']:6.3f} {v['direction_accuracy']:7.3f}")
    sig = m.get("significance")
    if sig:
        out.append(f"holdout significance: {sig.get('words', '')}")
    if m.get("ladder"):
        from mltrade.models.ladder import format_ladder
        out.append(format_ladder(m["ladder"]))
    if m.get("holdout_constant"):
        what = describe_constant(m["holdout_direction"], "every holdout session")
        out.append(f"WARNING: the model is constant on the holdout: {what}")
    elif m.get("holdout_constant_adapted"):
        out.append("WARNING: with the ATR adaptation the model is constant on the holdout: "
                   f"{describe_constant(m['holdout_direction_adapted'], 'every holdout session')}")
    return "\n".join(out)


def load_artifact(path: str) -> Tuple[Any, dict]:
    """(model, ncp.json dict) from a registry version directory or a ``.keras`` file (ncp.json beside)."""
    from mltrade.models.ncp.model import load_model
    p = Path(path)
    d = p if p.is_dir() else p.parent
    model_file = p if p.suffix == ".keras" else d / MODEL_FILE
    meta_file = d / ARTIFACT
    if not meta_file.exists():
        raise FileNotFoundError(f"{meta_file}: NCP artifact not found (train one with `mltrade train ncp`)")
    with open(meta_file) as fh:
        try:
            meta = json.load(fh)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{meta_file}: line {exc.lineno}: malformed JSON ({exc.msg})") from exc
    return load_model(str(model_file)), meta


def kept_model_path(s: NCPSettings) -> Optional[str]:
    """Directory of the registry's kept NCP model, or None."""
    p = s.registry().path(s.model_name)
    return str(p) if p else None


def write_artifact(model: Any, meta: dict, directory: str) -> str:
    """Write model.keras and ncp.json into ``directory`` (atomically each); returns the directory."""
    os.makedirs(directory, exist_ok=True)
    save_model(model, os.path.join(directory, MODEL_FILE))
    write_json_atomic(Path(directory) / ARTIFACT, meta)
    return directory
