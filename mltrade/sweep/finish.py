"""After the search: confirm the best trials through the broker, test once on the held-out range, judge the
search's significance over every trial, and build the summary that :mod:`mltrade.sweep.outputs` writes."""
from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from mltrade.optuna_storage import redact
from mltrade.settings import settings_of
from mltrade.sweep.outputs import write_outputs, write_trials
from mltrade.sweep.scoring import Scorer
from mltrade.sweep.settings import SweepSettings
from mltrade.sweep.significance import significance
from mltrade.sweep.trials import fold_values, run_of, worker_of

log = logging.getLogger(__name__)


@dataclass
class HeldOut:
    """The held-out test range: the best and the default parameters through the broker, the baselines."""

    best: object                        #: ``run_strategy`` result of the best parameters
    default: object                     #: ... of the default parameters
    baselines: Dict[str, dict]          #: summaries: "default params" and each baseline
    baseline_runs: Dict[str, object] = field(default_factory=dict)
    vector: Optional[dict] = None       #: the kernel's figures of the same two runs, where it can run them


def finish(scorer: Scorer, study, settings: SweepSettings, search_s: float, run: str = "",
           workers: Sequence[str] = (), failed: Sequence[dict] = ()) -> dict:
    """Confirm the best trials through the broker, test once on the held-out range, judge the search's
    significance over every trial, write every output; returns the summary written to ``sweep.json``.

    ``run``: this command's id (its trials are the "new" ones); ``workers``: the
    names of its workers; ``failed``: ``{"worker", "exitcode"}`` of those that died.
    """
    out = settings.out_dir()
    table = write_trials(study, out)
    summary, test = summarise(scorer, study, settings, search_s, run, workers, failed)
    write_outputs(out, scorer, settings, summary, table, test)
    return summary


def default_params(scorer: Scorer) -> dict:
    """The strategy's parameters of the searched space as configured (or as the class declares them)."""
    return {k: scorer.base.get(k, dict(scorer.cls.params._getitems()).get(k)) for k in scorer.space}


def confirm(scorer: Scorer, trials: Sequence) -> List[dict]:
    """Each trial re-run through the broker on every validation fold, beside the search's own fold values."""
    folds = range(len(scorer.layout.folds))
    engine = "evaluator" if scorer.signal is not None else "broker"
    out = []
    for t in trials:
        if scorer.signal is None:
            vec = [fold_values(t).get(f"fold{f}") for f in folds]
        else:
            vec = [float(scorer.vector_fold([t.params], f)[0]) for f in folds]
        brk = [scorer.broker_fold(t.params, f) for f in folds]
        out.append({"trial": t.number, "search_engine": engine, "params": t.params, "search_folds": vec,
                    "broker_folds": brk, "search_value": float(np.mean(vec)) if None not in vec else None,
                    "broker_value": float(np.mean(brk))})
    return out


def held_out(scorer: Scorer, best: dict, defaults: dict) -> HeldOut:
    """The best and the default parameters on the held-out test range, through the broker (and the kernel
    where it can), with the baselines (``[backtest] baselines``)."""
    a, b = scorer.layout.test
    test_best = scorer.broker_run(best, a, b)
    test_default = scorer.broker_run(defaults, a, b)
    res = HeldOut(test_best, test_default, {"default params": test_default.summary})
    if settings_of(scorer.cfg).backtest.baselines:
        res.baseline_runs = scorer.baselines(best, a, b, results=True)
        res.baselines.update({k: r.summary for k, r in res.baseline_runs.items()})
    if scorer.signal is not None:
        r = scorer.vector_test([best, defaults])
        res.vector = {"best_final_cash": float(r.final_cash[0]), "default_final_cash": float(r.final_cash[1]),
                      "best_trades": int(r.trade_count()[0])}
    return res


def importance(study, complete: Sequence) -> Dict[str, float]:
    """fANOVA parameter importance (empty with fewer than two complete trials or when it cannot be computed)."""
    import optuna

    if len(complete) < 2:
        return {}
    try:
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError) as exc:  # e.g. every value identical
        log.warning("parameter importance unavailable: %s", exc)
        return {}


def worker_rows(all_trials: Sequence, run: str, workers: Sequence[str], failed: Sequence[dict]):
    """``(rows, new trials)``: each worker of this run with its trial count and whether it finished or died."""
    ours = collections.Counter(worker_of(t) for t in all_trials if run_of(t) == run) if run else collections.Counter()
    died = {f["worker"]: f["exitcode"] for f in failed}
    rows = [{"worker": w, "trials": ours.get(w, 0),
             "status": f"died (exit code {died[w]})" if w in died else "finished"} for w in workers]
    return rows, sum(ours.values())


def summarise(scorer: Scorer, study, settings: SweepSettings, search_s: float, run: str = "",
              workers: Sequence[str] = (), failed: Sequence[dict] = ()):
    """``(summary, held-out runs)`` of the study: everything ``sweep.json`` and the report hold."""
    import optuna

    all_trials = study.get_trials(deepcopy=False)
    complete = [t for t in all_trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise ValueError("study: no completed trial to report")
    top = sorted(complete, key=lambda t: t.value, reverse=True)[:settings.top]
    best = top[0]
    sig = significance(all_trials, best, sum(b - a for a, b in scorer.layout.folds), seed=settings.seed)
    defaults = default_params(scorer)
    checked = confirm(scorer, top if settings.engine == "broker" else top[:1])
    test = held_out(scorer, best.params, defaults)
    rows, new = worker_rows(all_trials, run, workers, failed)
    summary = {
        "strategy": settings.strategy, "study": settings.study_name(), "storage": redact(settings.storage_url()),
        "engine": settings.engine, "search_engine": "evaluator" if scorer.signal is not None else "broker",
        "trials_total": len(all_trials), "trials_new": new, "trials_complete": len(complete),
        "trials_pruned": int(sum(t.state == optuna.trial.TrialState.PRUNED for t in all_trials)),
        "workers": rows, "failed_workers": list(failed),
        "search_seconds": round(search_s, 2), "layout": scorer.layout.describe(),
        "best_trial": best.number, "best_value": best.value, "best_params": best.params,
        "default_params": defaults, "confirmation": checked, "test_vector": test.vector,
        "test_best": test.best.summary, "test_default": test.default.summary,
        "importance": importance(study, complete),
        "test_baselines": {k: v for k, v in test.baselines.items() if k != "default params"},
        "synthetic_intraday": bool(scorer.bars.attrs.get("synthetic_intraday", False)),
        "trials": sig["trials"], "spa_pvalue": sig["spa_pvalue"], "deflated_sharpe": sig["deflated_sharpe"],
        "pbo": sig["pbo"]["pbo"] if sig.get("pbo") else None,
        "significance": sig,
    }
    return summary, test
