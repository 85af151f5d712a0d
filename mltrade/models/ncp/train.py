"""Training, walk-forward Optuna search and the one-time holdout evaluation of the NCP model.

Layout in sessions (chronological, see :mod:`mltrade.models.walkforward`)::

    [ search region: walk-forward folds (train | val | scored) ... ][embargo][ holdout ]

Each trial trains one model per fold (early stopping on the fold's val range)
and is scored by the knock-out strategy's performance on the fold's scored
range. The holdout is touched once, by the chosen parameters' final model
(trained on the sessions just before it). The registry keeps the model only
when its holdout objective beats the kept one.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import pandas as pd

from mltrade.models.ncp.adapt import ATRAdaptation, fit_adaptation
from mltrade.models.ncp.dataset import NCPDataset, PayoffSpec, build_dataset, feature_source
from mltrade.models.ncp.model import NCPConfig, build_model, predict_proba, save_model, set_input_stats
from mltrade.models.registry import ModelRegistry, write_json_atomic
from mltrade.models.walkforward import Fold, walk_forward_folds

OBJECTIVES = ("product", "sharpe")
#: settings that do not change what a trial's score means (a study may resume with other values)
_RUN_ONLY = {"trials", "storage", "state_dir", "search_seed", "study"}
ARTIFACT = "ncp.json"
MODEL_FILE = "model.keras"


@dataclass
class NCPSettings:
    """The ``[ncp]`` config section plus the certificate from ``[product]``."""

    data: str = "sample"
    start: str = "2016-01-01"
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
    train_sessions: int = 250
    val_sessions: int = 60
    score_sessions: int = 60
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

    def __post_init__(self) -> None:
        if self.daily_history:
            load_daily_history(self.daily_history, "ncp.daily_history")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"ncp.objective: expected one of {OBJECTIVES}, got {self.objective!r}")
        if not 0.5 <= self.threshold < 1:
            raise ValueError(f"ncp.threshold: expected a value in [0.5, 1), got {self.threshold!r}")
        if self.cell not in ("ltc", "cfc"):
            raise ValueError(f"ncp.cell: expected 'ltc' or 'cfc', got {self.cell!r}")
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


def split(ds: NCPDataset, s: NCPSettings) -> Tuple[list, Fold]:
    """Search folds over the sessions before the holdout, and the final fold whose test is the holdout."""
    n = len(ds)
    n_search = n - s.holdout_sessions - s.embargo
    folds = walk_forward_folds(np.arange(n_search), s.n_folds, s.train_sessions, s.val_sessions,
                               s.score_sessions, s.embargo)
    final = walk_forward_folds(np.arange(n), 1, s.train_sessions, s.val_sessions, s.holdout_sessions,
                               s.embargo)[0]
    return folds, final


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
        return float(r.mean() / sd * math.sqrt(252)) if sd > 0 else 0.0
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
DEFAULT_PARAMS: Dict[str, Any] = {
    "dense1": 32, "dense2": 16, "dense_dropout": 0.2, "dense_slope": 0.1, "ltc_units": 16, "ltc_units2": 8,
    "branch_head": 4, "head_units": 8, "head_dropout": 0.1, "head_slope": 0.1, "learning_rate": 2e-3,
    "epochs": 20, "batch_size": 32,
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
                     head_slope=float(p["head_slope"]), learning_rate=float(p["learning_rate"]), seed=seed)


class FoldTrainer:
    """One compiled model re-used across folds: weights, optimizer state and input statistics are reset."""

    def __init__(self, cfg: NCPConfig, epochs: int, batch_size: int, patience: int) -> None:
        self.cfg, self.epochs = cfg, int(epochs)
        self.batch_size, self.patience = int(batch_size), int(patience)
        self.model = build_model(cfg)
        self.model.optimizer.build(self.model.trainable_variables)
        self._w0 = self.model.get_weights()
        self._opt0 = [v.numpy() for v in self.model.optimizer.variables]

    def fit(self, train: NCPDataset, val: Optional[NCPDataset] = None, verbose: int = 0):
        """Train from the initial weights on ``train`` (early stopping on ``val``); returns the model."""
        import keras
        keras.utils.set_random_seed(self.cfg.seed)  # each fit is reproducible, whatever ran before
        self.model.set_weights(self._w0)
        for v, x in zip(self.model.optimizer.variables, self._opt0):
            v.assign(x)
        set_input_stats(self.model, train.daily, train.seq)
        cbs, vd = [], None
        if val is not None and len(val):
            vd = ([val.daily, val.seq], val.label)
            cbs.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=self.patience,
                                                     restore_best_weights=True))
        self.history = self.model.fit([train.daily, train.seq], train.label, validation_data=vd,
                                      epochs=self.epochs, batch_size=self.batch_size, shuffle=True,
                                      callbacks=cbs, verbose=verbose)
        return self.model


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
        "epochs": trial.suggest_int("epochs", 3, max(3, s.max_epochs)),
        "batch_size": trial.suggest_categorical("batch_size", [16, 32, 64]),
    }
    return p


def evaluate_params(params: Dict[str, Any], ds: NCPDataset, folds: list, s: NCPSettings,
                    report: Optional[Callable[[int, float], bool]] = None, seed: int = 0) -> float:
    """Mean scored-range objective over the walk-forward folds; ``report(step, value)`` -> True prunes."""
    cfg = config_from_params(params, ds.daily.shape[1], s, seed)
    trainer = FoldTrainer(cfg, params.get("epochs", DEFAULT_PARAMS["epochs"]),
                          params.get("batch_size", DEFAULT_PARAMS["batch_size"]), s.patience)
    values = []
    for k, f in enumerate(folds):
        model = trainer.fit(ds.subset(f.train), ds.subset(f.val))
        sc = ds.subset(f.test)
        d = directions(predict_proba(model, sc.daily, sc.seq), s.threshold)
        values.append(performance(d, sc, s.objective)["objective"])
        if report is not None and report(k, float(np.mean(values))):
            break
    return float(np.mean(values))


@dataclass
class FinalResult:
    """The chosen model, its adaptation and its one-time holdout figures."""

    model: Any
    adaptation: ATRAdaptation
    metrics: dict
    artifact: dict
    kept: bool = False
    path: Optional[str] = None


def train_final(params: Dict[str, Any], ds: NCPDataset, s: NCPSettings, seed: int = 0,
                offer: bool = True, verbose: int = 0) -> FinalResult:
    """Train the chosen parameters before the holdout, fit the ATR adaptation out of fold, test once.

    The adaptation is estimated on out-of-fold predictions before the holdout:
    the search folds' scored ranges (a model per fold, same parameters) and the
    final model's validation range; the holdout is never used for it.
    """
    folds, final = split(ds, s)
    cfg = config_from_params(params, ds.daily.shape[1], s, seed)
    trainer = FoldTrainer(cfg, params.get("epochs", DEFAULT_PARAMS["epochs"]),
                          params.get("batch_size", DEFAULT_PARAMS["batch_size"]), s.patience)
    train, val, test = ds.subset(final.train), ds.subset(final.val), ds.subset(final.test)
    model = trainer.fit(train, val, verbose=verbose)
    history = trainer.history
    oof: Dict[Any, int] = {}  # row -> out-of-fold direction
    for row, d in zip(range(final.val_start, final.val_stop),
                      directions(predict_proba(model, val.daily, val.seq), s.threshold)):
        oof[row] = int(d)
    if s.adapt:
        final_weights = model.get_weights()
        for f in folds:
            m = trainer.fit(ds.subset(f.train), ds.subset(f.val))
            sc = ds.subset(f.test)
            for row, d in zip(range(f.test_start, f.test_stop),
                              directions(predict_proba(m, sc.daily, sc.seq), s.threshold)):
                oof.setdefault(row, int(d))
        model.set_weights(final_weights)
    adaptation = ATRAdaptation.identity()
    adapt_range: list = []
    if s.adapt and oof:
        adapt_range = [str(ds.dates[min(oof)]), str(ds.dates[max(oof)])]
        rows = np.array(sorted(oof))
        est = ds.subset(rows)
        edges = np.quantile(est.atr, np.linspace(0, 1, s.atr_bins + 1)[1:-1])
        adaptation = fit_adaptation(np.array([oof[r] for r in rows]), est.atr, est.long_return,
                                    est.short_return, s.atr_bins, s.adapt_min_count, edges)
    # the holdout: touched once here
    p_test = predict_proba(model, test.daily, test.seq)
    d_raw = directions(p_test, s.threshold)
    d_adapt = adaptation.apply(d_raw, test.atr)
    metrics = {
        "holdout_objective": performance(d_adapt, test, s.objective)["objective"],
        "model": performance(d_raw, test, s.objective),
        "model_adapted": performance(d_adapt, test, s.objective),
        "baselines": baselines(test, s.objective),
        "holdout": [str(test.dates[0]), str(test.dates[-1])],
        "train": [str(train.dates[0]), str(train.dates[-1])],
        "val": [str(val.dates[0]), str(val.dates[-1])] if len(val) else [],
        "search": [str(ds.dates[folds[0].train_start]), str(ds.dates[folds[-1].test_stop - 1])],
        "objective": s.objective,
        "epochs_run": len(history.history.get("loss", [])),
        "adaptation_sessions": int(sum(t["count"] for t in adaptation.table)),
        "adaptation_range": adapt_range,
    }
    artifact = {"settings": s.to_dict(), "params": {**DEFAULT_PARAMS, **params}, "config": cfg.to_dict(),
                "adaptation": adaptation.to_dict(), "feature_names": list(ds.feature_names),
                "feature_source": feature_source(), "metrics": metrics}
    res = FinalResult(model, adaptation, metrics, artifact)
    if offer:
        reg = s.registry()

        def write(d: Path) -> None:
            save_model(model, str(d / MODEL_FILE))
            write_json_atomic(d / ARTIFACT, artifact)

        res.kept = reg.offer(s.model_name, write, {"holdout_objective": metrics["holdout_objective"],
                                                   "objective": s.objective},
                             {"settings": s.to_dict(), "params": artifact["params"]},
                             metric="holdout_objective")
        p = reg.path(s.model_name)
        res.path = str(p) if p else None
    return res


def optimize(s: NCPSettings, n_trials: Optional[int] = None, storage: Optional[str] = None,
             ds: Optional[NCPDataset] = None, log: Callable[[str], None] = print,
             timeout: Optional[float] = None) -> Tuple[Any, FinalResult]:
    """Walk-forward Optuna search (resumable, pruned), then the final model on the best parameters."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ds = dataset_for(s) if ds is None else ds
    folds, _ = split(ds, s)
    startup = min(8, max(2, (n_trials or 8) // 3))
    sampler = optuna.samplers.TPESampler(seed=s.search_seed, n_startup_trials=startup)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0)
    study = optuna.create_study(study_name=s.study, storage=storage or s.storage_url(), direction="maximize",
                                sampler=sampler, pruner=pruner, load_if_exists=True)
    # an unset daily_history is left out so that studies made before the key existed still resume
    mine = {k: v for k, v in s.to_dict().items()
            if k not in _RUN_ONLY and not (k == "daily_history" and not v)}
    stored = study.user_attrs.get("settings")
    if stored is not None and stored != mine and study.trials:
        diff = sorted(k for k in set(stored) | set(mine) if stored.get(k) != mine.get(k))
        raise ValueError(f"study {s.study!r} in {storage or s.storage_url()} was run with other settings "
                         f"({', '.join(diff)}): its scores are not comparable; use another --study name")
    study.set_user_attr("settings", mine)

    def objective(trial) -> float:
        params = suggest_params(trial, s)
        t0 = time.time()

        def report(step: int, value: float) -> bool:
            trial.report(value, step)
            return trial.should_prune()

        value = evaluate_params(params, ds, folds, s, report, seed=trial.number)
        if trial.should_prune():
            log(f"trial {trial.number}: pruned at {value:.4f} ({time.time() - t0:.1f} s)")
            raise optuna.TrialPruned()
        log(f"trial {trial.number}: {s.objective} = {value:.4f} ({time.time() - t0:.1f} s)")
        return value

    study.optimize(objective, n_trials=n_trials if n_trials is not None else s.trials, timeout=timeout,
                   gc_after_trial=True)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise RuntimeError(f"study {s.study!r}: no trial completed; run more trials")
    best = study.best_trial
    log(f"best trial {best.number}: {s.objective} = {best.value:.4f} params {best.params}")
    result = train_final(dict(best.params), ds, s, seed=best.number)
    return study, result


def best_params(s: NCPSettings, storage: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """Parameters of the best completed trial of the configured study, or None."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=s.study, storage=storage or s.storage_url())
        return dict(study.best_trial.params)
    except (KeyError, ValueError):
        return None


def format_metrics(m: dict) -> str:
    """Holdout figures of the model beside the baselines, as a text table."""
    rows = [("model", m["model"]), ("model + ATR adaptation", m["model_adapted"])]
    rows += [(k, v) for k, v in m["baselines"].items()]
    out = [f"holdout {m['holdout'][0]} .. {m['holdout'][1]} (out-of-sample, {m['objective']})",
           f"{'':26s} {'log_product':>11s} {'sharpe':>8s} {'trades':>6s} {'hit':>6s} {'dir.acc':>7s}"]
    for name, v in rows:
        out.append(f"{name:26s} {v['log_product']:11.4f} {v['sharpe']:8.3f} {int(v['trades']):6d} "
                   f"{v['hit_rate']:6.3f} {v['direction_accuracy']:7.3f}")
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
