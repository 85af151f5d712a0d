"""The search loop of one sweep worker: ask a batch, drop what the study already holds, score fold by fold, tell.

Per batch: mirror the shared study's finished trials (every worker's) into an in-memory study, ask
``batch`` trials there (TPE with constant liar; :mod:`mltrade.sweep.batch_sampler` keeps what a batch does not
change between asks), drop every
parameter set the study already holds or another worker claimed (claims are atomic in the database,
:mod:`mltrade.sweep.coordination`), score the rest fold by fold with one vectorised evaluation per fold
(the median pruner drops weak trials after each fold), then add the finished trials, with their session
returns, to the shared storage in one transaction (:mod:`mltrade.sweep.bulk_trials`).
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from mltrade.optuna_storage import WorkerIdentity, rdb_of
from mltrade.pbo import encode_returns
from mltrade.sweep.bulk_trials import add_finished_trials
from mltrade.sweep.coordination import Claims, params_key, worker_seed
from mltrade.sweep.scoring import Scorer
from mltrade.sweep.space import suggest
from mltrade.sweep.trials import RETURNS_ATTR, UID_ATTR, uid_of

log = logging.getLogger(__name__)

#: batches in a row with nothing new to score before a worker stops (the search space looks exhausted)
IDLE_BATCHES = 3


def local_study(seed: int):
    """The worker's in-memory study: TPE (50 random start-up trials, multivariate, constant liar; the batch
    version of Optuna's ``TPESampler``, same proposals) and a median pruner."""
    import optuna

    from mltrade.sweep.batch_sampler import BatchTPESampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = BatchTPESampler(seed=seed, n_startup_trials=50, multivariate=True)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=20, n_warmup_steps=0)
    return optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)


@dataclass
class Mirror:
    """The shared study's finished trials, copied into the worker's local study as they appear."""

    study: object
    local: object
    seen: Set[str] = field(default_factory=set)     #: uids of the trials already in the local study
    known: Set[str] = field(default_factory=set)    #: parameter keys of every finished trial in the study

    def sync(self) -> None:
        """Copy the finished trials the local study does not have yet (every worker's)."""
        import optuna

        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        fresh = [t for t in self.study.get_trials(deepcopy=False, states=finished) if uid_of(t) not in self.seen]
        self.seen.update(uid_of(t) for t in fresh)
        self.known.update(params_key(t.params) for t in fresh)
        if fresh:
            self.local.add_trials(fresh)


def propose(mirror: Mirror, space: dict, n: int, claims: Claims, worker: str) -> Tuple[list, List[dict], int]:
    """Ask ``n`` trials; keep those whose parameters nobody scored or claimed (claimed now for ``worker``).
    Returns ``(kept trials, their parameters, number skipped)``; the skipped ones are told FAIL."""
    import optuna

    local = mirror.local
    asked = [local.ask() for _ in range(n)]
    params = [suggest(t, space) for t in asked]
    keys = [params_key(p) for p in params]
    first: Dict[str, int] = {}
    for i, key in enumerate(keys):
        if key not in mirror.known and key not in first:
            first[key] = i
    held = claims.claim(list(first), worker)
    keep = [i for key, i in first.items() if key in held]
    for i in sorted(set(range(n)) - set(keep)):    # already scored or claimed: never score twice
        local.tell(asked[i], state=optuna.trial.TrialState.FAIL)
    mirror.known.update(keys[i] for i in keep)
    return [asked[i] for i in keep], [params[i] for i in keep], n - len(keep)


def score_folds(scorer: Scorer, trials: Sequence, params: Sequence[dict]):
    """Score the trials fold by fold (reporting the running mean, pruning after each fold but the last).
    Returns ``(sum of fold values, session returns per trial, indices pruned)``."""
    k, n_folds = len(trials), len(scorer.layout.folds)
    alive, sums, pruned = list(range(k)), np.zeros(k), set()
    rets: List[List[np.ndarray]] = [[] for _ in range(k)]
    for f in range(n_folds):
        if not alive:
            break
        if scorer.signal is not None:
            vals, fold_rets = scorer.vector_fold([params[i] for i in alive], f, returns=True)
        else:
            pairs = [scorer.broker_fold(params[i], f, returns=True) for i in alive]
            vals, fold_rets = np.array([v for v, _ in pairs]), [r for _, r in pairs]
        still = []
        for j, (i, v) in enumerate(zip(alive, vals)):
            sums[i] += v
            rets[i].append(np.asarray(fold_rets[j], dtype=float))
            trials[i].report(float(sums[i] / (f + 1)), f)
            if f < n_folds - 1 and trials[i].should_prune():
                pruned.add(i)
            else:
                still.append(i)
        alive = still
    return sums, rets, pruned


def tell(mirror: Mirror, trials: Sequence, scored, n_folds: int, uid_prefix: str, first: int) -> list:
    """Tell the local study each trial's outcome, with its uid and session returns; returns the frozen trials."""
    import optuna

    sums, rets, pruned = scored
    for i, t in enumerate(trials):
        uid = f"{uid_prefix}:{first + i}"
        t.set_user_attr(UID_ATTR, uid)
        t.set_user_attr(RETURNS_ATTR, encode_returns(np.concatenate(rets[i])))
        mirror.seen.add(uid)
        if i in pruned:
            mirror.local.tell(t, state=optuna.trial.TrialState.PRUNED)
        else:
            mirror.local.tell(t, float(sums[i] / n_folds))
    numbers = {t.number for t in trials}
    return [t for t in mirror.local.get_trials(deepcopy=False) if t.number in numbers]


def run_trials(scorer: Scorer, study, n_trials: int, batch: int, progress: bool = True,
               worker: Optional[WorkerIdentity] = None, run: str = "") -> int:
    """Run ``n_trials`` trials in batches against the shared ``study``; returns the number run.

    The worker (``worker``: host, pid, random token; this process by default) takes the next slot of the
    study and samples with seed ``seed + slot``. Each trial carries a unique ``sweep_uid``
    (worker:run:sequence); a crash loses at most the batch in flight.
    """
    from tqdm import tqdm

    me = worker or WorkerIdentity.here()
    run = run or uuid.uuid4().hex[:8]
    claims = Claims(rdb_of(study), study._study_id)
    slot = claims.register(me.name)
    mirror = Mirror(study, local_study(worker_seed(scorer.s.seed, slot)))
    log.info("sweep worker %s: slot %d, sampler seed %d", me.name, slot, worker_seed(scorer.s.seed, slot))
    done = skipped = idle = 0
    bar = tqdm(total=n_trials, desc=f"sweep {me.name}", unit="trial", disable=not progress, leave=False)
    while done < n_trials:
        mirror.sync()
        trials, params, skip = propose(mirror, scorer.space, min(batch, n_trials - done), claims, me.name)
        skipped += skip
        idle = 0 if trials else idle + 1
        if idle >= IDLE_BATCHES:
            log.warning("sweep worker %s: the sampler proposed only parameter sets the study already has "
                        "(%d skipped); stopping after %d trials: the search space looks exhausted",
                        me.name, skipped, done)
            break
        if not trials:
            continue
        scored = score_folds(scorer, trials, params)
        add_finished_trials(study, tell(mirror, trials, scored, len(scorer.layout.folds), f"{me.name}:{run}", done))
        done += len(trials)
        bar.update(len(trials))
    bar.close()
    if skipped:
        log.info("sweep worker %s: %d proposed parameter sets skipped (already in the study)", me.name, skipped)
    return done
