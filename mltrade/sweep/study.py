"""Optuna studies over a strategy's declared ``param_space``, scored on walk-forward validation folds.

Layout over the sessions of ``[start, end]`` (chronological, nothing shuffled; :mod:`mltrade.sweep.layout`)::

    [ unused warm-up ][ val fold 1 ][ val fold 2 ] ... [ val fold F ][ held-out test ]

Each trial runs the strategy on every validation fold separately (fresh cash
per fold) and reports the fold's log growth to Optuna, which may prune it;
the trial's value is the mean over folds. The test range is never seen by the
search: only the best parameters (and the default ones, as a baseline) are
run on it at the end, through the vectorised kernel and through the full
backtrader ``KnockoutBroker`` run.

Trials are asked and told in batches so that one vectorised evaluation
scores a whole batch. The study lives in any Optuna RDB storage (SQLite file
by default, PostgreSQL for several machines) and resumes when run again.

The parts: :mod:`~mltrade.sweep.settings` (``[sweep]``), :mod:`~mltrade.sweep.space` (the parameters
searched), :mod:`~mltrade.sweep.scoring` (kernel or broker), :mod:`~mltrade.sweep.search` (one
worker's loop), :mod:`~mltrade.sweep.coordination` (workers sharing a study),
:mod:`~mltrade.sweep.trials` (what a trial carries), :mod:`~mltrade.sweep.finish` (confirm, test,
summarise), :mod:`~mltrade.sweep.significance`, :mod:`~mltrade.sweep.outputs` (the files written).
This module opens the study and runs the workers.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import secrets
import time
import uuid
from dataclasses import asdict
from typing import List, Optional

import pandas as pd

from mltrade.optuna_storage import WorkerIdentity, open_study
# kept importable here for mltrade.models.ncp until it imports them from mltrade.pbo
from mltrade.sweep.finish import finish
from mltrade.sweep.scoring import Scorer
from mltrade.sweep.search import run_trials
from mltrade.sweep.settings import SweepSettings

log = logging.getLogger(__name__)


def create_study(settings: SweepSettings, load_only: bool = False):
    """Create (or load, resuming) the Optuna study in ``settings``' storage."""
    return open_study(settings.storage_url(), settings.study_name(), load_only=load_only)


def _worker(cfg: dict, settings: SweepSettings, n_trials: int, token: str, run: str,
            bars: Optional[pd.DataFrame]) -> None:
    settings = SweepSettings(**{**asdict(settings), "progress": False})
    scorer = Scorer(cfg, settings, bars)
    study = create_study(settings, load_only=True)
    run_trials(scorer, study, n_trials, settings.batch, progress=False, worker=WorkerIdentity.here(token), run=run)


def optimize(cfg: dict, settings: SweepSettings, bars: Optional[pd.DataFrame] = None) -> dict:
    """Run (or resume) the study, confirm the best trials through the broker, write the report.

    With ``jobs > 1`` the extra workers are processes of their own; one that dies
    loses only its batch in flight: the others finish and the report names it.
    Returns the summary written to ``sweep.json`` (also the report's figures).
    """
    import optuna

    settings.check()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.time()
    scorer = Scorer(cfg, settings, bars)
    study = create_study(settings)
    run = uuid.uuid4().hex[:8]
    me = WorkerIdentity.here()
    if settings.jobs > 1:
        names, failed = _run_workers(cfg, settings, scorer, study, me, run)
    else:
        names, failed = [me.name], []
        run_trials(scorer, study, settings.trials, settings.batch, settings.progress, me, run)
    search_s = time.time() - t0
    return finish(scorer, study, settings, search_s, run=run, workers=names, failed=failed)


def _run_workers(cfg: dict, settings: SweepSettings, scorer: Scorer, study, me: WorkerIdentity, run: str):
    """``jobs`` workers: this process and ``jobs - 1`` spawned ones, each with its share of the trials.
    Returns ``(worker names, failed workers)``; a worker that dies loses only its batch in flight."""
    names: List[str] = [me.name]
    failed: List[dict] = []
    share = [settings.trials // settings.jobs + (i < settings.trials % settings.jobs) for i in range(settings.jobs)]
    ctx = mp.get_context("spawn")
    tokens = [secrets.token_hex(3) for _ in share[1:]]
    procs = [ctx.Process(target=_worker, args=(cfg, settings, n, tok, run, scorer.bars), daemon=True)
             for n, tok in zip(share[1:], tokens)]
    for p in procs:
        p.start()
    names += [WorkerIdentity(me.host, p.pid, tok).name for p, tok in zip(procs, tokens)]
    try:
        run_trials(scorer, study, share[0], settings.batch, settings.progress, me, run)
    except BaseException:
        for p in procs:
            p.terminate()
        raise
    for p, name in zip(procs, names[1:]):
        p.join()
        if p.exitcode != 0:
            failed.append({"worker": name, "exitcode": p.exitcode})
            log.warning("sweep worker %s died (exit code %s): its batch in flight is lost, the other "
                        "workers' trials stand", name, p.exitcode)
    return names, failed
