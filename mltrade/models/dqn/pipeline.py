"""Walk-forward training of the DQN ensembles: every fold and session, the summary and the registry's offer.

Per fold and session (:func:`mltrade.models.dqn.fold.train_session_fold`): agents are trained on the
training range, the best ``agents`` of ``candidates`` are selected on the validation range, the gate is
fitted on the first part of validation and its threshold tuned on the rest, and the result is evaluated
once on the test range (the holdout) beside the baselines. Every choice reads validation only. The last
fold's ensembles are offered to the model registry ranked by their validation return (``val_return``, mean
over sessions) with the validation and holdout date ranges; the holdout figures (``oos_return*``) are
reported, never used to choose. A bundle whose validation outputs are constant
(:func:`mltrade.models.dqn.inference.constant_outputs`) is ``degenerate`` and refused by the registry; one
that turns constant on the holdout is flagged ``holdout_constant`` (``metrics.json`` and each session's
``settings.json``).

The steps live in their own modules: :mod:`.data` (what a run reads), :mod:`.simulation` (pricing
decisions), :mod:`.inference` (``decide``), :mod:`.fold` (one fold), :mod:`.bundle` (the bundle on disk,
``load_bundle`` for the strategy).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import pandas as pd

# costs_from, fold_candidates, train_candidate, training_data and _score are imported from here by
# mltrade.models.dqn.distributed
from mltrade.models.dqn.bundle import save_bundle
from mltrade.models.dqn.data import TrainingData, costs_from, training_data  # noqa: F401
from mltrade.models.dqn.fold import AgentSource, FoldResult, fold_candidates, train_candidate  # noqa: F401
from mltrade.models.dqn.fold import train_session_fold
from mltrade.models.dqn.simulation import session_score as _score  # noqa: F401
from mltrade.models.registry import ModelRegistry


def train_walk_forward(cfg: dict, daily: Optional[pd.DataFrame] = None, progress: bool = True,
                       log: Callable[[str], None] = print, intraday: Optional[pd.DataFrame] = None,
                       agent_source: Optional[AgentSource] = None) -> dict:
    """Walk-forward training over all folds and sessions; offers the last fold's bundle to the registry.

    ``[dqn] mode = "intraday"``: one ``intraday`` ensemble that decides after ``n_candles`` bars of each
    session (observations: the daily set plus those candles), buys at the next bar's open and exits at the
    session close, stop or knock-out; ``intraday`` (or ``[dqn] data``) gives the bars. ``agent_source``:
    where the candidate agents come from (default: trained here; see :func:`train_session_fold`).
    Returns the metrics dict (also written as metrics.json when the model is kept).
    """
    t0 = time.time()
    data = training_data(cfg, daily, intraday)
    per_fold, last = train_folds(cfg, data, progress, log, agent_source)
    summary = summarise(cfg, per_fold, last, data.sessions, round(time.time() - t0, 1))
    return offer(cfg, summary, last, data.daily)


def train_folds(cfg: dict, data: TrainingData, progress: bool, log: Callable[[str], None],
                agent_source: Optional[AgentSource]) -> tuple:
    """``(every fold's metrics, the last fold's result per session)``, each fold and session logged."""
    daily, sim = data.daily, data.sim
    per_fold: List[dict] = []
    last: Dict[str, FoldResult] = {}
    for fold in data.folds:
        fold_obs, dev_model = data.fold_observations(cfg, fold)
        for s in data.sessions:
            r = train_session_fold(cfg, daily, fold_obs, fold, s, progress, log, sim=sim,
                                   agent_source=agent_source)
            r.deviation_model = dev_model
            per_fold.append(r.metrics)
            last[s] = r
            t = r.metrics["test"]
            log(f"fold {fold.index} {s}: test {fold.describe(daily.index)['test']} return "
                f"{t['total_return']:+.2%} ({t['trades']} trades); ungated "
                f"{r.metrics['test_ungated']['total_return']:+.2%}; buy&hold "
                f"{r.metrics['baselines']['buy_and_hold']['total_return']:+.2%}, always-long "
                f"{r.metrics['baselines']['always_long']['total_return']:+.2%}, random "
                f"{r.metrics['baselines']['random_direction']['total_return']:+.2%}")
            for key in ("degenerate_reason", "holdout_constant_reason"):
                if r.metrics[key]:
                    log(f"fold {fold.index} {s}: constant outputs: {r.metrics[key]}")
    return per_fold, last


def summarise(cfg: dict, per_fold: List[dict], last: Dict[str, FoldResult], sessions: List[str],
              seconds: float) -> dict:
    """The run's summary (``metrics.json``): holdout and validation returns per session, selection PBO,
    significance, the selection and holdout ranges, the flags of the kept (last) fold and its ladder."""
    summary: Dict[str, Any] = {"folds": per_fold, "seconds": seconds, "sessions": sessions}
    for s in sessions:
        rets = [m["test"]["total_return"] for m in per_fold if m["session"] == s]
        summary[f"oos_return_{s}"] = float(np.prod([1 + r for r in rets]) - 1)
        summary[f"val_return_{s}"] = float(last[s].metrics["validation"]["total_return"])
    # PBO of each fold's candidate selection, per session kind (validation returns only)
    summary["selection_pbo"] = {s: [dict(m["selection_pbo"], fold=m["fold"].get("fold", k)) for k, m in
                                    enumerate(x for x in per_fold if x["session"] == s)] for s in sessions}
    seed = int(cfg.get("seed", 0))
    summary["significance"] = {s: holdout_significance(per_fold, s, seed) for s in sessions}
    primary = "day" if "day" in sessions else sessions[0]
    summary["oos_return"] = summary[f"oos_return_{primary}"]
    # selection (registry): the kept bundle's validation return, mean over its sessions; never the holdout
    summary["val_return"] = float(np.mean([summary[f"val_return_{s}"] for s in sessions]))
    fold_desc = last[sessions[0]].metrics["fold"]
    summary["selection_metric"] = "val_return"
    summary["selection_range"] = list(fold_desc["val"])
    summary["holdout_range"] = list(fold_desc["test"])
    reasons = [last[s].metrics["degenerate_reason"] for s in sessions if last[s].metrics["degenerate_reason"]]
    summary["degenerate"] = bool(reasons)
    summary["degenerate_reason"] = "; ".join(reasons)
    hc = [last[s].metrics["holdout_constant_reason"] for s in sessions
          if last[s].metrics["holdout_constant_reason"]]
    summary["holdout_constant"] = bool(hc)
    summary["holdout_constant_reason"] = "; ".join(hc)
    below = [last[s].metrics["below_baselines_reason"] for s in sessions if last[s].metrics["below_baselines_reason"]]
    summary["below_baselines"] = bool(below)
    summary["below_baselines_reason"] = "; ".join(below)
    # the learner ladder of the kept (last) fold per session, and the one-line verdict
    summary["ladder"] = {s: last[s].metrics["ladder"] for s in sessions if "ladder" in last[s].metrics}
    # the kept model over its own holdout (the last fold's test range): what `mltrade backtest` trades
    summary["holdout_return_kept"] = {s: float(last[s].metrics["test"]["total_return"]) for s in sessions}
    return summary


def offer(cfg: dict, summary: dict, last: Dict[str, FoldResult], daily: pd.DataFrame) -> dict:
    """Offer the last fold's bundle to the registry (ranked by ``val_return``); ``summary`` with ``kept`` and
    ``model_dir``."""
    reg = ModelRegistry(cfg.get("registry", ".mltrade/models"))
    name = cfg.get("name", "dqn")
    kept = reg.offer(name, lambda d: save_bundle(d, last, cfg, daily), summary, {"dqn": cfg}, "val_return",
                     selection_range=summary["selection_range"], holdout_range=summary["holdout_range"],
                     degenerate=summary["degenerate"], degenerate_reason=summary["degenerate_reason"],
                     warning=summary["below_baselines_reason"])
    summary["kept"] = kept
    summary["model_dir"] = str(reg.path(name)) if reg.path(name) else None
    return summary


def refusal_advice(summary: dict, cfg: dict) -> str:
    """One line: why the registry refused the model of ``summary`` and a command that changes the outcome."""
    name = f"{cfg.get('registry', '.mltrade/models')}/{cfg.get('name', 'dqn')}"
    why = (f"degenerate ({summary.get('degenerate_reason')})" if summary.get("degenerate")
           else "the kept model did better on the same validation range")
    if "gates refuse" in str(summary.get("degenerate_reason", "")):
        todo = (f"the gates refuse every trade: raise [dqn] gate_min_trades or lower drawdown_limit (now "
                f"{cfg.get('drawdown_limit', -1.0)}) in a --config file and run `mltrade train dqn --config FILE`")
    else:
        todo = (f"train another with `mltrade train dqn --seed {int(cfg.get('seed', 0)) + 1}` (or more "
                f"--steps / --candidates than {cfg.get('steps')} / {cfg.get('candidates')}; docs/dqn.md)")
    return f"the registry did not keep the DQN model trained into {name}: {why}; {todo}, then run this again"


def holdout_significance(per_fold: List[dict], session: str, seed: int = 0) -> dict:
    """Sharpe and its bootstrap interval, total-return interval and SPA p-values of the ``session`` ensemble's
    holdout session returns (all test folds, in order) against buy-and-hold of the index, always-long with
    the same certificates and session kind, and no trade."""
    from mltrade.significance import sharpe, significance

    folds = [m for m in per_fold if m["session"] == session]

    def series(key: str) -> np.ndarray:
        return np.concatenate([m[key] for m in folds]) if folds else np.zeros(0)
    r = series("test_session_returns")
    out = significance(r, {"buy_and_hold": series("buy_and_hold_session_returns"),
                           "always_long": series("always_long_session_returns"), "no_trade": np.zeros(len(r))},
                       seed=seed)
    out["sharpe"] = sharpe(r) if len(r) > 1 and np.std(r) > 0 else None
    return out

