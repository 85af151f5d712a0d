"""The walk-forward Optuna search: the search space, a trial's score, the shared study and its workers,
the search's overfitting (PBO), the best trial, and :func:`optimize` (search, then the final model)."""
from __future__ import annotations

import hashlib
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from mltrade.models.ncp.data import cached_dataset, dataset_key, fold_datasets, load_dataset, save_dataset, split
from mltrade.models.ncp.dataset import NCPDataset
from mltrade.models.ncp.final import FinalResult, train_final
from mltrade.models.ncp.fit import configure_tensorflow, device_name, fold_predictions, use_jit
from mltrade.models.ncp.scoring import constant_output, describe_constant, trade_returns
from mltrade.models.ncp.settings import LAYOUT, _RUN_ONLY, NCPSettings


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
    _check_settings(study, s, url)
    jobs = max(1, min(jobs, n))
    log(f"search: {n} trials, {jobs} worker(s), device {device_name()}, "
        f"train step {'XLA-compiled' if use_jit(s.jit_compile) else 'graph-compiled'}")
    if jobs == 1:
        # a fresh study in one process is reproducible (seed = search_seed); a resumed one gets a new seed
        seed = s.search_seed if not study.trials else None
        run_trials(s, url, n, ds, log, timeout, seed=seed, worker="" if seed is None else "local")
    else:
        if url.startswith("sqlite:///") and not os.path.isabs(url[len("sqlite:///"):]):
            url = "sqlite:///" + os.path.abspath(url[len("sqlite:///"):])
        _run_workers(s, url, n, jobs, ds, from_settings, log, timeout)
        study = optuna.load_study(study_name=s.study, storage=url)
    best = choose_best(study)
    why = " (every completed trial is degenerate)" if best.user_attrs.get("degenerate") else ""
    log(f"best trial {best.number} (validation folds): {s.objective} = {best.value:.4f}{why} "
        f"params {best.params}")
    result = train_final(dict(best.params), ds, s, seed=best.number, search_pbo=search_pbo(study))
    return study, result


def _check_settings(study, s: NCPSettings, url: str) -> None:
    """Record the settings that give a trial's score its meaning in the study; refuse to resume a study
    that has trials under other settings (its scores would not be comparable)."""
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


def _run_workers(s: NCPSettings, url: str, n: int, jobs: int, ds: NCPDataset, from_settings: bool,
                 log: Callable[[str], None], timeout: Optional[float]) -> None:
    """``n`` trials shared among ``jobs`` spawned worker processes on the study at ``url`` (a SQLite path
    made absolute); they read the dataset from the on-disk cache (a run-only file when it has no key)."""
    import multiprocessing as mp
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


def best_params(s: NCPSettings, storage: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """Parameters of the best completed trial of the configured study, or None."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=s.study, storage=storage or s.storage_url())
        return dict(choose_best(study).params)
    except (KeyError, ValueError, RuntimeError):
        return None
