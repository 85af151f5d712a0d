"""Could a sweep's best trial be luck? Hansen's SPA over every trial, the deflated Sharpe of the best, PBO."""
from __future__ import annotations

import numpy as np

from mltrade.sweep.trials import trial_returns


def significance(trials, best, n_sessions: int, seed: int = 0, reps: int = 2000) -> dict:
    """Could the best trial be luck? SPA over every trial and the deflated Sharpe of the best.

    ``trials``: every trial of the study (finished ones count); ``best``: the
    chosen one; ``n_sessions``: validation sessions of a trial that ran every
    fold. Hansen's SPA p-value over all trials' validation session returns
    against the zero benchmark (no position; the sessions a pruned trial never
    reached count as flat) and the Deflated Sharpe Ratio of the best trial
    counting every trial ever finished in the study (pruned included, with the
    Sharpe of the folds they ran).
    """
    import optuna

    from mltrade.pbo import pbo
    from mltrade.significance import deflated_sharpe, sharpe, spa_best_pvalue

    done = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    cols, sharpes = [], []
    for t in done:
        r = trial_returns(t)
        if r is None:
            continue
        full = np.zeros(n_sessions)
        full[:min(len(r), n_sessions)] = r[:n_sessions]
        cols.append(full)
        sharpes.append(sharpe(r, periods=1))
    best_r = trial_returns(best)
    out = {"trials": len(done), "trials_with_returns": len(cols), "sessions": int(n_sessions),
           "benchmark": "zero (no position)", "spa_pvalue": None, "deflated_sharpe": None,
           "best_sharpe": None, "pbo": None}
    if best_r is not None and cols and n_sessions >= 2:
        p = spa_best_pvalue(np.column_stack(cols), np.zeros(n_sessions), reps=reps, seed=seed)
        d = deflated_sharpe(best_r, np.asarray(sharpes), len(done))
        out["spa_pvalue"] = None if p is None else float(p)
        out["deflated_sharpe"] = None if d is None else float(d)
        out["best_sharpe"] = sharpe(best_r)
    if len(cols) >= 2:
        out["pbo"] = pbo(np.column_stack(cols))
    out["words"] = significance_words(out)
    return out


def significance_words(sig: dict) -> str:
    """The significance figures in one sentence."""
    n = sig["trials"]
    p, d = sig["spa_pvalue"], sig["deflated_sharpe"]
    if sig["trials_with_returns"] == 0:
        return (f"Significance not computed: none of the study's {n:,} trials carries validation session returns "
                f"(run by an older version).")
    if p is None and d is None:
        return (f"Significance not computed: {sig['sessions']} validation sessions are too few, or the best trial "
                f"never changed its cash ({n:,} trials).")
    passed = (p is not None and p < 0.05, d is not None and d >= 0.95)
    verdict = ("distinguishable from luck at 5%" if all(passed) else
               "not distinguishable from luck at 5%" if not any(passed) else
               "mixed evidence (one test passes at 5%, the other does not)")
    ps = "n/a" if p is None else f"{p:.3f}"
    dstr = "n/a" if d is None else f"{d:.2f}"
    from mltrade.pbo import pbo_words

    return (f"Best of {n:,} trials: {verdict}. SPA p-value {ps} (Hansen, studentized, over all "
            f"{sig['trials_with_returns']:,} trials' {sig['sessions']} validation session returns against no "
            f"position; below 0.05: some trial beats it beyond luck), deflated Sharpe {dstr} (probability that "
            f"the best trial's true Sharpe beats the best that {n:,} tries of luck would show; 0.95 or more to "
            f"trust it), {pbo_words(sig.get('pbo'))}.")
