"""The final model and its one-time holdout evaluation (:func:`train_final`), offered to the registry.

The final model is trained on the sessions before its own early-stopping window ("final val", after the
search region); the ATR adaptation is estimated on the fold models' scored ranges (out of fold, never a
model's own early-stopping window). The holdout is touched once per model, to score and report it;
nothing is chosen by it. The learner ladder runs beside the NCP on the same inputs and folds.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from mltrade.models.ncp.adapt import ATRAdaptation, fit_adaptation
from mltrade.models.ncp.artifact import ARTIFACT, MODEL_FILE
from mltrade.models.ncp.data import fold_datasets, selection_range, split
from mltrade.models.ncp.dataset import NCPDataset, feature_source
from mltrade.models.ncp.fit import DEFAULT_PARAMS, config_from_params, device_name, fold_predictions, make_trainers
from mltrade.models.ncp.model import average_models, predict_proba, save_model
from mltrade.models.ncp.scoring import (baselines, constant_output, describe_constant, directions,
                                        holdout_significance, performance, trade_returns)
from mltrade.models.ncp.settings import NCPSettings
from mltrade.models.registry import ModelRegistry, write_json_atomic
from mltrade.models.walkforward import Fold


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


@dataclass
class _OutOfFold:
    """One set of parameters on the search folds: one model per fold, scored on the fold's scored range."""

    values: list             #: the per-fold objectives
    rows: np.ndarray         #: the sessions of the folds' scored ranges, folds in order
    direction: np.ndarray    #: the directions on those sessions (out of fold)
    prob: np.ndarray         #: the probabilities on those sessions
    selection: list          #: first and last of those sessions (:func:`selection_range`)


@dataclass
class _Holdout:
    """The final model on the holdout: probabilities, directions, directions with the ATR adaptation."""

    prob: np.ndarray
    raw: np.ndarray
    adapted: np.ndarray


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
    cfg = config_from_params(params, ds.daily.shape[1], s, seed)
    trainers = make_trainers(params, ds.daily.shape[1], s, seed)
    oof = _validation_folds(params, ds, folds, s, seed, trainers)
    adaptation, adapt_range = _adaptation(ds, oof, s)
    # the final model: early stopping on its own window, after the search region
    train, val, test = ds.subset(final.train), ds.subset(final.val), ds.subset(final.test)
    model = average_models([t.fit(train, val, verbose=verbose) for t in trainers])
    reasons = _degenerate_reasons(model, val, oof, s)
    hold = _score_holdout(model, test, adaptation, s)
    metrics = _metrics(ds, folds, s, oof, hold, (train, val, test), trainers[0].history, adaptation,
                       adapt_range, reasons)
    if search_pbo is not None:
        metrics["pbo"] = search_pbo
    # the kept model's holdout decisions, so a backtest can reconcile its figure session by session
    metrics["holdout_decisions"] = {"dates": [str(x) for x in test.dates], "direction": [int(x) for x in hold.adapted]}
    lad = ncp_ladder(ds, folds, final, s, oof.direction, hold.raw)
    metrics["ladder"] = lad.to_dict()
    artifact = {"settings": s.to_dict(), "params": {**DEFAULT_PARAMS, **params}, "config": cfg.to_dict(),
                "adaptation": adaptation.to_dict(), "feature_names": list(ds.feature_names),
                "feature_source": feature_source(), "metrics": metrics}
    res = FinalResult(model, adaptation, metrics, artifact)
    if offer:
        res.kept, res.path = _offer_final(s, model, artifact, oof.selection, bool(reasons))
    return res


def _validation_folds(params: Dict[str, Any], ds: NCPDataset, folds: list, s: NCPSettings, seed: int,
                      trainers: list) -> _OutOfFold:
    """Validation folds: the selection figure and the out-of-fold directions for the adaptation."""
    fd = fold_datasets(ds, folds)
    fp = fold_predictions(params, fd, s, seed, trainer=trainers)
    oof_rows = np.concatenate([np.arange(f.test_start, f.test_stop) for f in folds])
    return _OutOfFold(fp["values"], oof_rows, np.concatenate(fp["directions"]), np.concatenate(fp["probs"]),
                      selection_range(ds, folds))


def _adaptation(ds: NCPDataset, oof: _OutOfFold, s: NCPSettings) -> Tuple[ATRAdaptation, list]:
    """The ATR adaptation estimated on the out-of-fold directions (identity when ``adapt`` is off), and the
    range it was estimated on."""
    adaptation = ATRAdaptation.identity()
    adapt_range: list = []
    if s.adapt:
        adapt_range = list(oof.selection)
        est = ds.subset(oof.rows)
        edges = np.quantile(est.atr, np.linspace(0, 1, s.atr_bins + 1)[1:-1])
        adaptation = fit_adaptation(oof.direction, est.atr, est.long_return, est.short_return, s.atr_bins,
                                    s.adapt_min_count, edges)
    return adaptation, adapt_range


def _degenerate_reasons(model: Any, val: NCPDataset, oof: _OutOfFold, s: NCPSettings) -> list:
    """Why the model is degenerate (constant on its early-stopping sessions or on all the folds' scored
    ranges); empty when it is not."""
    p_val = predict_proba(model, val.daily, val.seq) if len(val) else np.zeros(0)
    d_val = directions(p_val, s.threshold)
    return [r for r in (describe_constant(constant_output(d_val, p_val),
                                          f"its {len(val)} early-stopping validation sessions"),
                        describe_constant(constant_output(oof.direction, oof.prob),
                                          f"the {len(oof.direction)} sessions of the validation folds")) if r]


def _score_holdout(model: Any, test: NCPDataset, adaptation: ATRAdaptation, s: NCPSettings) -> _Holdout:
    """The holdout: touched once here, to score and report."""
    p_test = predict_proba(model, test.daily, test.seq)
    d_raw = directions(p_test, s.threshold)
    return _Holdout(p_test, d_raw, adaptation.apply(d_raw, test.atr))


def _metrics(ds: NCPDataset, folds: list, s: NCPSettings, oof: _OutOfFold, hold: _Holdout,
             parts: Tuple[NCPDataset, NCPDataset, NCPDataset], history: Any, adaptation: ATRAdaptation,
             adapt_range: list, reasons: list) -> dict:
    """The figures ncp.json keeps: validation (selection), holdout beside the baselines, the date ranges,
    degeneracy and the holdout's constant-output flags. ``parts``: the final (train, val, test)."""
    train, val, test = parts
    d_raw, d_adapt = hold.raw, hold.adapted
    hold_const = constant_output(d_raw, hold.prob)
    hold_const_adapted = constant_output(d_adapt, hold.prob)
    val_perf = performance(oof.direction, ds.subset(oof.rows), s.objective)
    return {
        "validation_objective": float(np.mean(oof.values)),
        "validation_folds": [float(v) for v in oof.values],
        "validation": val_perf,
        "selection_range": oof.selection,
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


def _offer_final(s: NCPSettings, model: Any, artifact: dict, selection: list,
                 degenerate: bool) -> Tuple[bool, Optional[str]]:
    """Offer the final model to the registry (:func:`_offer`): whether it was kept, and the directory of
    the registry's kept version (None when there is none)."""
    metrics = artifact["metrics"]
    reg = s.registry()

    def write(d: Path) -> None:
        save_model(model, str(d / MODEL_FILE))
        write_json_atomic(d / ARTIFACT, artifact)

    reg_metrics = {k: metrics[k] for k in ("validation_objective", "selection_range", "holdout",
                                            "holdout_objective", "degenerate", "degenerate_reason",
                                            "holdout_constant", "holdout_direction", "objective")}
    reg_metrics["holdout_range"] = metrics["holdout"]
    kept = _offer(reg, s.model_name, write, reg_metrics,
                  {"settings": s.to_dict(), "params": artifact["params"]},
                  selection, metrics["holdout"], degenerate)
    p = reg.path(s.model_name)
    return kept, (str(p) if p else None)


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
