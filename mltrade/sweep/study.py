"""Optuna studies over a strategy's declared ``param_space``, scored on walk-forward validation folds.

Layout over the sessions of ``[start, end]`` (chronological, nothing shuffled)::

    [ unused warm-up ][ val fold 1 ][ val fold 2 ] ... [ val fold F ][ held-out test ]

Each trial runs the strategy on every validation fold separately (fresh cash
per fold) and reports the fold's log growth to Optuna, which may prune it;
the trial's value is the mean over folds. The test range is never seen by the
search: only the best parameters (and the default ones, as a baseline) are
run on it at the end, through the vectorised evaluator and through the full
backtrader ``KnockoutBroker`` run.

Trials are asked and told in batches so that one vectorised evaluation
scores a whole batch. The study lives in any Optuna RDB storage (SQLite file
by default, PostgreSQL for several machines) and resumes when run again.
"""
from __future__ import annotations

import base64
import collections
import copy
import html
import json
import logging
import math
import multiprocessing as mp
import secrets
import time
import uuid
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from mltrade.sweep.bulk_trials import add_finished_trials
from mltrade.sweep.coordination import Claims, WorkerIdentity, params_key, worker_seed
from mltrade.sweep.evaluator import DEFAULTS, SignalFn, evaluate, momentum_signals, param_sets, session_grid

log = logging.getLogger(__name__)

#: strategies whose decision the evaluator can reproduce: class name -> (signal function, params it understands)
VECTOR_SIGNALS: Dict[str, Tuple[SignalFn, Dict[str, object]]] = {
    "IntradayMomentum": (momentum_signals, {}),
}
PRODUCT_KEYS = ("kind", "ratio", "spread", "fx", "barrier_step", "barrier_buffer", "financing_rate",
                "financing_spread", "unwind")
FLOOR = 1e-6  #: log growth of a ruined fold is log(FLOOR)


@dataclass
class SweepSettings:
    """Everything a sweep needs besides the loaded configuration."""

    strategy: str = "momentum"
    trials: int = 1000
    jobs: int = 1
    storage: str = ""             #: Optuna RDB URL; "" = SQLite file in the output folder
    study: str = ""               #: study name; "" = "<strategy>-<start>-<end>"
    engine: str = "vector"        #: vector | broker
    start: str = "2014-01-01"     #: the backtest's default range ([sweep] start = "" takes [backtest] start)
    end: str = "2018-12-31"
    folds: int = 3
    test_frac: float = 0.25
    batch: int = 100
    top: int = 3
    seed: int = 42
    out: str = "reports/sweeps"
    progress: bool = True

    def study_name(self) -> str:
        """The study's name in the storage."""
        return self.study or f"{self.strategy}-{self.start}-{self.end}"

    def out_dir(self) -> Path:
        """Folder of this study's outputs."""
        return Path(self.out) / self.study_name()

    def storage_url(self) -> str:
        """The Optuna RDB URL (SQLite file in the output folder by default)."""
        if self.storage:
            return normalise_url(self.storage)
        path = self.out_dir() / "study.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path.resolve()}"

    def check(self) -> None:
        """Raise ``ValueError`` naming the first invalid setting."""
        if self.engine not in ("vector", "broker"):
            raise ValueError(f"engine: expected 'vector' or 'broker', got {self.engine!r}")
        for name in ("trials", "jobs", "folds", "batch", "top"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: expected a positive integer, got {getattr(self, name)!r}")
        if not 0 < self.test_frac < 1:
            raise ValueError(f"test_frac: expected a fraction in (0, 1), got {self.test_frac!r}")


def normalise_url(url: str) -> str:
    """``postgresql://`` -> ``postgresql+psycopg://`` when psycopg2 (SQLAlchemy's default driver) is missing."""
    if url.startswith(("postgresql://", "postgres://")):
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


# --------------------------------------------------------------------------- layout
@dataclass
class Layout:
    """Session index ranges: validation folds and the held-out test range."""

    sessions: pd.DatetimeIndex
    folds: List[Tuple[int, int]]
    test: Tuple[int, int]

    def describe(self) -> dict:
        """First/last session date of every validation fold and of the test range."""
        def rng(a: int, b: int) -> List[str]:
            return [str(self.sessions[a].date()), str(self.sessions[b - 1].date())]
        return {"val_folds": [rng(a, b) for a, b in self.folds], "test": rng(*self.test)}


def make_layout(sessions: pd.DatetimeIndex, folds: int, test_frac: float) -> Layout:
    """Validation folds before a held-out test range, laid out with ``walk_forward_folds``."""
    from mltrade.models.walkforward import walk_forward_folds

    n = len(sessions)
    test = max(1, int(round(n * test_frac)))
    search = n - test
    block = (search - 1) // folds
    if block < 1:
        raise ValueError(f"start/end: {n} sessions are too few for {folds} validation folds and a test range")
    wf = walk_forward_folds(sessions[:search], n_folds=folds, train=search - folds * block, val=0, test=block)
    return Layout(sessions, [(f.test_start, f.test_stop) for f in wf], (search, n))


# --------------------------------------------------------------------------- parameters
def space_of(cls) -> Dict[str, object]:
    """The strategy's declared parameter space (``param_space`` class attribute)."""
    space = dict(getattr(cls, "param_space", {}) or {})
    if not space:
        raise ValueError(f"strategy: {cls.__name__} declares no param_space to optimise")
    return space


def suggest(trial, space: Dict[str, object]) -> dict:
    """Draw one parameter set from ``space``: (low, high[, step]) ranges or a list of choices."""
    out = {}
    for name, spec in space.items():
        if isinstance(spec, list):
            out[name] = trial.suggest_categorical(name, spec)
        elif isinstance(spec, tuple) and len(spec) in (2, 3):
            low, high = spec[0], spec[1]
            step = spec[2] if len(spec) == 3 else None
            if all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high, step or 1)):
                out[name] = trial.suggest_int(name, low, high, step=step or 1)
            else:
                out[name] = trial.suggest_float(name, float(low), float(high), step=step)
        else:
            raise ValueError(f"param_space[{name}]: expected (low, high[, step]) or a list of choices, got {spec!r}")
    return out


def base_params(cfg: dict, cls) -> dict:
    """Fixed parameters of every trial: [product], [broker] fees, [backtest] cash, [strategy.params]."""
    from mltrade.strategies.registry import strategy_params

    valid = strategy_params(cls)
    out = {k: v for k, v in cfg.get("product", {}).items() if k in PRODUCT_KEYS and k in valid}
    out.update(cfg["strategy"].get("params", {}))
    out["cash"] = float(cfg["backtest"]["cash"])
    out["commission_fixed"] = float(cfg["broker"]["commission_fixed"])
    out["commission_pct"] = float(cfg["broker"]["commission_pct"])
    return out


# --------------------------------------------------------------------------- scoring
class Scorer:
    """Scores parameter sets on the validation folds / test range, vectorised or through the broker."""

    def __init__(self, cfg: dict, settings: SweepSettings, bars: Optional[pd.DataFrame] = None) -> None:
        from mltrade.backtest import load_bars
        from mltrade.strategies.registry import get_strategy

        self.cfg, self.s = cfg, settings
        self.cls = get_strategy(settings.strategy)
        self.space = space_of(self.cls)
        self.base = base_params(cfg, self.cls)
        if bars is None:
            c = copy.deepcopy(cfg)
            c["backtest"]["start"], c["backtest"]["end"] = settings.start, settings.end
            bars = load_bars(c)
        self.bars = bars
        self.exchange = cfg["backtest"]["exchange"]
        self.interval = int(cfg["backtest"]["interval"])
        self.grid = session_grid(bars, self.exchange, self.interval)
        self.layout = make_layout(self.grid.sessions, settings.folds, settings.test_frac)
        # engine broker: every trial is scored through backtrader (slow, honest); vector: the numpy evaluator
        self.signal = self._vector_signal() if settings.engine == "vector" else None
        if settings.engine == "vector" and self.signal is None:
            raise ValueError(f"engine: the vectorised evaluator cannot run {self.cls.__name__} with these settings "
                             f"(it reproduces {', '.join(f'{k} {v[1]}' for k, v in VECTOR_SIGNALS.items())} "
                             f"with whole certificates and the parameters {', '.join(sorted(DEFAULTS))}); "
                             f"use --engine broker")
        self._fold_grids = [self.grid.subset(a, b) for a, b in self.layout.folds]
        self._test_grid = self.grid.subset(*self.layout.test)

    def _vector_signal(self) -> Optional[SignalFn]:
        spec = VECTOR_SIGNALS.get(self.cls.__name__)
        if spec is None or bool(self.cfg["broker"].get("fractional", False)):
            return None
        fn, fixed = spec
        for k, v in fixed.items():
            if self.base.get(k, v) != v:
                return None
        if any(k not in DEFAULTS for k in self.base if k not in fixed):
            return None
        return fn

    def sets(self, params: Sequence[dict]) -> List[dict]:
        """Trial parameters merged over the fixed ones, as evaluator parameter sets."""
        keep = set(DEFAULTS)
        return [{k: v for k, v in {**self.base, **p}.items() if k in keep} for p in params]

    # -- vectorised
    def vector_fold(self, params: Sequence[dict], fold: int, returns: bool = False):
        """Log growth of each parameter set on validation fold ``fold`` (and, with ``returns``, the
        ``(n_sets, n_sessions)`` session returns)."""
        res = evaluate(self._fold_grids[fold], param_sets(self.sets(params)), self.signal)
        growth = np.log(np.maximum(res.final_cash / res.params["cash"][:, 0], FLOOR))
        return (growth, res.session_returns()) if returns else growth

    def vector_test(self, params: Sequence[dict]):
        """The evaluator's result on the held-out test range."""
        return evaluate(self._test_grid, param_sets(self.sets(params)), self.signal)

    # -- full backtrader runs
    def _slice(self, a: int, b: int) -> pd.DataFrame:
        s = self.grid.sessions
        lo = pd.Timestamp(s[a]).tz_localize(self.bars.index.tz)
        hi = pd.Timestamp(s[b - 1]).tz_localize(self.bars.index.tz) + pd.Timedelta(days=1)
        return self.bars[(self.bars.index >= lo) & (self.bars.index < hi)]

    def broker_run(self, params: dict, a: int, b: int):
        """``mltrade.backtest.run_strategy`` of the strategy with ``params`` on sessions ``[a, b)``."""
        from mltrade.backtest import run_strategy, strategy_kwargs

        c = copy.deepcopy(self.cfg)
        c["strategy"]["name"] = self.s.strategy
        c["strategy"]["params"] = {**c["strategy"].get("params", {}), **params}
        return run_strategy(self._slice(a, b), self.cls, strategy_kwargs(self.cls, c), c)

    def baselines(self, params: dict, a: int, b: int, results: bool = False) -> Dict[str, dict]:
        """``mltrade.backtest.baseline_runs`` (buy-and-hold, always long, random direction) on sessions ``[a, b)``
        (with ``results``: ``baseline_results``, each with its equity and trades)."""
        from mltrade.backtest import baseline_results, baseline_runs, strategy_kwargs

        c = copy.deepcopy(self.cfg)
        c["strategy"]["name"] = self.s.strategy
        c["strategy"]["params"] = {**c["strategy"].get("params", {}), **params}
        run = baseline_results if results else baseline_runs
        return run(self._slice(a, b), self.cls, strategy_kwargs(self.cls, c), c)

    def broker_fold(self, params: dict, fold: int, returns: bool = False):
        """Log growth of one parameter set on validation fold ``fold``, through the broker (and, with
        ``returns``, its session returns: the last equity of each session against the one before)."""
        a, b = self.layout.folds[fold]
        res = self.broker_run(params, a, b)
        final = float(res.equity["value"].iloc[-1]) if len(res.equity) else self.base["cash"]
        growth = math.log(max(final / self.base["cash"], FLOOR))
        if not returns:
            return growth
        eq = res.equity["value"]
        by_day = eq.groupby(pd.DatetimeIndex(eq.index).normalize()).last() if len(eq) else eq
        days = pd.DatetimeIndex(self.grid.sessions[a:b]).normalize()
        if by_day.index.tz is not None:
            by_day.index = by_day.index.tz_localize(None)
        closes = by_day.reindex(days).ffill().fillna(self.base["cash"]).to_numpy(float)
        prev = np.r_[self.base["cash"], closes[:-1]]
        with np.errstate(divide="ignore", invalid="ignore"):
            return growth, np.where(prev > 0, closes / prev - 1.0, 0.0)


# --------------------------------------------------------------------------- the study
def create_study(settings: SweepSettings, load_only: bool = False):
    """Create (or load, resuming) the Optuna study in ``settings``' storage."""
    import optuna

    import sqlalchemy.exc

    url = settings.storage_url()
    for attempt in range(10):
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))
            if url.startswith("sqlite"):
                _sqlite_fast(storage)
            if load_only:
                return optuna.load_study(study_name=settings.study_name(), storage=storage)
            return optuna.create_study(study_name=settings.study_name(), storage=storage, direction="maximize",
                                       load_if_exists=True)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError,
                sqlalchemy.exc.ProgrammingError) as exc:
            # workers starting together on an empty database race to create Optuna's schema: retry
            if attempt == 9:
                raise ValueError(f"storage: cannot open study {settings.study_name()!r} at "
                                 f"{_redact(url)}: {exc}") from exc
            log.info("storage busy (%s), retrying", type(exc).__name__)
            time.sleep(0.5 + 0.5 * attempt)


def _sqlite_fast(storage) -> None:
    """WAL journal and relaxed fsync for a SQLite study file (several times faster commits, still crash-safe)."""
    from sqlalchemy import event

    @event.listens_for(storage.engine, "connect")
    def _pragmas(dbapi_conn, _record) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()
    storage.engine.dispose()


def _engine_kwargs(url: str) -> dict:
    # several worker processes may write one SQLite file: wait for the lock instead of failing
    return {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}


def _local_study(seed: int):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=50, multivariate=True, constant_liar=True)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=20, n_warmup_steps=0)
    return optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)


def _uid(t) -> str:
    return t.user_attrs.get("sweep_uid") or f"remote:{t.number}"


def _rdb(study):
    """The RDB storage under Optuna's cache wrapper."""
    storage = study._storage
    return getattr(storage, "_backend", storage)


#: user attribute holding a trial's per-session validation returns (see :func:`encode_returns`)
RETURNS_ATTR = "sweep_returns"


def encode_returns(returns: np.ndarray) -> str:
    """Session returns as compact text for a trial attribute (zlib-compressed little-endian float64, base64)."""
    return base64.b64encode(zlib.compress(np.asarray(returns, dtype="<f8").tobytes(), 6)).decode("ascii")


def decode_returns(text: str) -> np.ndarray:
    """The inverse of :func:`encode_returns`."""
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype="<f8").copy()


def trial_returns(trial) -> Optional[np.ndarray]:
    """The trial's validation session returns (folds in order; a pruned trial's stop early), None if not stored."""
    text = trial.user_attrs.get(RETURNS_ATTR)
    return None if text is None else decode_returns(text)


def run_trials(scorer: Scorer, study, n_trials: int, batch: int, progress: bool = True,
               worker: Optional[WorkerIdentity] = None, run: str = "") -> int:
    """Run ``n_trials`` trials in batches against the shared ``study``; returns the number run.

    The worker (``worker``: host, pid, random token; this process by default)
    takes the next slot of the study and samples with seed ``seed + slot``. Per
    batch: mirror the shared study's finished trials (every worker's) into an
    in-memory study, ask ``batch`` trials there (TPE, constant liar), drop every
    parameter set the study already holds or another worker claimed (claims are
    atomic in the database, :mod:`mltrade.sweep.coordination`), score the rest
    fold by fold with one vectorised evaluation per fold (the median pruner drops
    weak trials after each fold), then add the finished trials, with their
    session returns, to the shared storage. Each trial carries a unique
    ``sweep_uid`` (worker:run:sequence); a crash loses at most the batch in flight.
    """
    import optuna
    from tqdm import tqdm

    me = worker or WorkerIdentity.here()
    run = run or uuid.uuid4().hex[:8]
    claims = Claims(_rdb(study), study._study_id)
    slot = claims.register(me.name)
    local = _local_study(worker_seed(scorer.s.seed, slot))
    log.info("sweep worker %s: slot %d, sampler seed %d", me.name, slot, worker_seed(scorer.s.seed, slot))
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    seen: set = set()
    known: set = set()                # parameter keys of every finished trial in the study
    done = skipped = idle = 0
    n_folds = len(scorer.layout.folds)
    vector = scorer.signal is not None
    bar = tqdm(total=n_trials, desc=f"sweep {me.name}", unit="trial", disable=not progress, leave=False)
    while done < n_trials:
        fresh = [t for t in study.get_trials(deepcopy=False, states=finished) if _uid(t) not in seen]
        seen.update(_uid(t) for t in fresh)
        known.update(params_key(t.params) for t in fresh)
        if fresh:
            local.add_trials(fresh)
        asked = [local.ask() for _ in range(min(batch, n_trials - done))]
        asked_params = [suggest(t, scorer.space) for t in asked]
        keys = [params_key(p) for p in asked_params]
        first: Dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in known and key not in first:
                first[key] = i
        held = claims.claim(list(first), me.name)
        keep = [i for key, i in first.items() if key in held]
        for i in sorted(set(range(len(asked))) - set(keep)):    # already scored or claimed: never score twice
            local.tell(asked[i], state=optuna.trial.TrialState.FAIL)
        skipped += len(asked) - len(keep)
        if not keep:
            idle += 1
            if idle >= 3:
                log.warning("sweep worker %s: the sampler proposed only parameter sets the study already has "
                            "(%d skipped); stopping after %d trials: the search space looks exhausted",
                            me.name, skipped, done)
                break
            continue
        idle = 0
        trials = [asked[i] for i in keep]
        params = [asked_params[i] for i in keep]
        known.update(keys[i] for i in keep)
        k = len(trials)
        alive, sums, pruned = list(range(k)), np.zeros(k), set()
        rets: List[List[np.ndarray]] = [[] for _ in range(k)]
        for f in range(n_folds):
            if not alive:
                break
            if vector:
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
        for i, t in enumerate(trials):
            uid = f"{me.name}:{run}:{done + i}"
            t.set_user_attr("sweep_uid", uid)
            t.set_user_attr(RETURNS_ATTR, encode_returns(np.concatenate(rets[i])))
            seen.add(uid)
            if i in pruned:
                local.tell(t, state=optuna.trial.TrialState.PRUNED)
            else:
                local.tell(t, float(sums[i] / n_folds))
        numbers = {t.number for t in trials}
        add_finished_trials(study, [t for t in local.get_trials(deepcopy=False)[-len(asked):]
                                    if t.number in numbers])
        done += k
        bar.update(k)
    bar.close()
    if skipped:
        log.info("sweep worker %s: %d proposed parameter sets skipped (already in the study)", me.name, skipped)
    return done


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
    names, failed = [me.name], []
    if settings.jobs > 1:
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
    else:
        run_trials(scorer, study, settings.trials, settings.batch, settings.progress, me, run)
    search_s = time.time() - t0
    return finish(scorer, study, settings, search_s, run=run, workers=names, failed=failed)


# --------------------------------------------------------------------------- results
def worker_of(trial) -> str:
    """The worker that ran ``trial`` (from its ``sweep_uid``)."""
    return str(trial.user_attrs.get("sweep_uid", "")).split(":")[0]


def run_of(trial) -> str:
    """The command run (``optimize`` call) that added ``trial`` (from its ``sweep_uid``)."""
    parts = str(trial.user_attrs.get("sweep_uid", "")).split(":")
    return parts[1] if len(parts) == 3 else ""


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


def fold_values(trial) -> Dict[str, float]:
    """Per-fold objective values recovered from the running means reported to Optuna."""
    iv = trial.intermediate_values
    out, prev = {}, 0.0
    for k in sorted(iv):
        out[f"fold{k}"] = (k + 1) * iv[k] - k * prev
        prev = iv[k]
    return out


def trials_table(study) -> pd.DataFrame:
    """One row per trial: number, state, value, per-fold values and parameters."""
    rows = []
    for t in study.trials:
        row = {"number": t.number, "state": t.state.name, "value": t.value,
               "worker": worker_of(t), **fold_values(t),
               **{f"param_{k}": v for k, v in t.params.items()}}
        rows.append(row)
    return pd.DataFrame(rows)


def finish(scorer: Scorer, study, settings: SweepSettings, search_s: float, run: str = "",
           workers: Sequence[str] = (), failed: Sequence[dict] = ()) -> dict:
    """Confirm the best trials through the broker, test once on the held-out range, judge the search's
    significance over every trial, write every output.

    ``run``: this command's id (its trials are the "new" ones); ``workers``: the
    names of its workers; ``failed``: ``{"worker", "exitcode"}`` of those that died.
    """
    import optuna

    from mltrade.analyzers import export_csv, export_json

    out = settings.out_dir()
    out.mkdir(parents=True, exist_ok=True)
    all_trials = study.get_trials(deepcopy=False)
    table = trials_table(study)
    export_csv(table, out / "trials.csv")
    complete = [t for t in all_trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise ValueError("study: no completed trial to report")
    ours = collections.Counter(worker_of(t) for t in all_trials if run_of(t) == run) if run else collections.Counter()
    died = {f["worker"]: f["exitcode"] for f in failed}
    worker_rows = [{"worker": w, "trials": ours.get(w, 0),
                    "status": f"died (exit code {died[w]})" if w in died else "finished"} for w in workers]
    top = sorted(complete, key=lambda t: t.value, reverse=True)[:settings.top]
    best = top[0]
    sig = significance(all_trials, best, sum(b - a for a, b in scorer.layout.folds), seed=settings.seed)
    defaults = {k: scorer.base.get(k, dict(scorer.cls.params._getitems()).get(k)) for k in scorer.space}
    confirm = []
    # the broker re-runs the top trials (engine broker) or the best one (engine vector) on the validation folds
    for t in (top if settings.engine == "broker" else top[:1]):
        if scorer.signal is None:
            vec = [fold_values(t).get(f"fold{f}") for f in range(len(scorer.layout.folds))]
        else:
            vec = [float(scorer.vector_fold([t.params], f)[0]) for f in range(len(scorer.layout.folds))]
        brk = [scorer.broker_fold(t.params, f) for f in range(len(scorer.layout.folds))]
        confirm.append({"trial": t.number, "search_engine": "evaluator" if scorer.signal is not None else "broker", "params": t.params, "search_folds": vec, "broker_folds": brk,
                        "search_value": float(np.mean(vec)) if None not in vec else None,
                        "broker_value": float(np.mean(brk))})
    # held-out test: the best and the default parameters, through the broker (and the evaluator if possible)
    a, b = scorer.layout.test
    test_best = scorer.broker_run(best.params, a, b)
    test_default = scorer.broker_run(defaults, a, b)
    baselines = {"default params": test_default.summary}
    base_runs = {}
    if scorer.cfg["backtest"].get("baselines", True):
        base_runs = scorer.baselines(best.params, a, b, results=True)
        baselines.update({k: r.summary for k, r in base_runs.items()})
    vec_test = None
    if scorer.signal is not None:
        r = scorer.vector_test([best.params, defaults])
        vec_test = {"best_final_cash": float(r.final_cash[0]), "default_final_cash": float(r.final_cash[1]),
                    "best_trades": int(r.trade_count()[0])}
    importance = {}
    if len(complete) >= 2:
        try:
            importance = {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
        except (RuntimeError, ValueError) as exc:  # e.g. every value identical
            log.warning("parameter importance unavailable: %s", exc)
    summary = {
        "strategy": settings.strategy, "study": settings.study_name(), "storage": _redact(settings.storage_url()),
        "engine": settings.engine, "search_engine": "evaluator" if scorer.signal is not None else "broker",
        "trials_total": len(all_trials), "trials_new": sum(ours.values()),
        "trials_complete": len(complete),
        "trials_pruned": int(sum(t.state == optuna.trial.TrialState.PRUNED for t in all_trials)),
        "workers": worker_rows, "failed_workers": list(failed),
        "search_seconds": round(search_s, 2), "layout": scorer.layout.describe(),
        "best_trial": best.number, "best_value": best.value, "best_params": best.params,
        "default_params": defaults, "confirmation": confirm, "test_vector": vec_test,
        "test_best": test_best.summary, "test_default": test_default.summary, "importance": importance,
        "test_baselines": {k: v for k, v in baselines.items() if k != "default params"},
        "synthetic_intraday": bool(scorer.bars.attrs.get("synthetic_intraday", False)),
        "trials": sig["trials"], "spa_pvalue": sig["spa_pvalue"], "deflated_sharpe": sig["deflated_sharpe"],
        "pbo": sig["pbo"]["pbo"] if sig.get("pbo") else None,
        "significance": sig,
    }
    write_best_config(out / "best_config.toml", scorer, best.params)
    figures = [("Optimisation history", _history_figure(table)),
               ("Parameter importance", _importance_figure(importance))]
    sections = [("Study", _summary_html(summary)),
                ("Top trials (validation folds)", table[table.state == "COMPLETE"].sort_values(
                    "value", ascending=False).head(20).to_html(index=False, border=0, float_format="{:.4g}".format))]
    # the held-out test range was never used to choose: its figures are out of sample
    rsum = dict(test_best.summary, strategy=f"{settings.strategy} (best trial {best.number}, held-out test)",
                synthetic_intraday=summary["synthetic_intraday"], out_of_sample=True)
    from mltrade.report import write_report
    from mltrade.sweep.verdict import sweep_lead
    rsum["lead"] = sweep_lead(summary, test_best.trades, pbo=sig.get("pbo", summary.get("pbo")))
    write_report(out, rsum, test_best.trades, test_best.equity, sections, figures,
                 baselines=baselines, baseline_equity={k: r.equity for k, r in base_runs.items()},
                 baseline_trades={k: r.trades for k, r in base_runs.items()},
                 title=f"mltrade sweep: study {settings.study_name()}")
    export_json(summary, out / "sweep.json")
    return summary


def _redact(url: str) -> str:
    """The storage URL without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        user = cred.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in cred else url
    return url


def write_best_config(path: Path, scorer: Scorer, params: dict) -> Path:
    """The best parameters as a config file ``mltrade backtest --config`` accepts (run on the test range)."""
    from mltrade.feeds.loader import atomic_write_text

    c = scorer.cfg
    lo, hi = scorer.layout.describe()["test"]
    lines = [f"# best parameters of sweep study {scorer.s.study_name()!r} ({scorer.s.strategy});",
             "# searched on the validation folds, the [backtest] range below is the held-out test range",
             "[backtest]", f'data = {_toml(c["backtest"]["data"])}', f"start = {_toml(lo)}", f"end = {_toml(hi)}",
             f'cash = {_toml(float(c["backtest"]["cash"]))}', "", "[broker]"]
    lines += [f"{k} = {_toml(v)}" for k, v in c["broker"].items()]
    lines += ["", "[product]"] + [f"{k} = {_toml(v)}" for k, v in c["product"].items()]
    lines += ["", "[strategy]", f"name = {_toml(scorer.s.strategy)}", "", "[strategy.params]"]
    merged = {**c["strategy"].get("params", {}), **params}
    lines += [f"{k} = {_toml(v)}" for k, v in merged.items() if v is not None]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    return json.dumps(str(v))


def _history_figure(table: pd.DataFrame):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    done = table[table.state == "COMPLETE"].sort_values("number")
    ax.scatter(done["number"], done["value"], s=6, alpha=0.5, label="trial (mean validation log growth)")
    ax.plot(done["number"], done["value"].cummax(), color="C3", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("objective")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def _importance_figure(importance: Dict[str, float]):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.4 * max(len(importance), 1)))
    names = list(importance)[::-1]
    ax.barh(names, [importance[n] for n in names])
    ax.set_xlabel("importance (fANOVA)")
    fig.tight_layout()
    return fig


def _fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def _pbo_cell(res: Optional[dict]) -> str:
    from mltrade.pbo import pbo_words

    if not res:
        return pbo_words(None)
    q = res["logit_quantiles"]
    return (f"{pbo_words(res)}; logit of the chosen trial's out-of-sample rank: 5/50/95 % quantiles "
            f"{q['5']:+.2f} / {q['50']:+.2f} / {q['95']:+.2f}; chosen trial loses out of sample in "
            f"{res['prob_oos_loss']:.0%} of the splits")


def _summary_html(s: dict) -> str:
    from mltrade.sweep.verdict import rounded

    rows = [("significance", s["significance"]["words"]),
            ("trials (total / new / complete / pruned)",
             f"{s['trials_total']} / {s['trials_new']} / {s['trials_complete']} / {s['trials_pruned']}"),
            ("SPA p-value / deflated Sharpe / trials counted",
             f"{_fmt(s['spa_pvalue'], '.3f')} / {_fmt(s['deflated_sharpe'], '.3f')} / {s['trials']}"),
            ("probability of backtest overfitting (PBO)", _pbo_cell(s["significance"].get("pbo"))),
            ("workers of this run", "; ".join(f"{w['worker']}: {w['trials']} trials, {w['status']}"
                                             for w in s["workers"]) or "none"),
            ("search time", f"{s['search_seconds']} s"), ("storage", s["storage"]), ("engine", s["engine"]),
            ("validation folds", ", ".join(f"{a}..{b}" for a, b in s["layout"]["val_folds"])),
            ("held-out test", "..".join(s["layout"]["test"])),
            ("best trial", f"{s['best_trial']}: {rounded(s['best_params'])} (mean validation log growth "
                           f"{s['best_value']:.5f})"),
            ("test: best params, broker", f"total return {s['test_best'].get('total_return', float('nan')):.4f}"),
            ("test: default params, broker", f"total return {s['test_default'].get('total_return', float('nan')):.4f}")]
    if s["test_vector"]:
        rows.append(("test: best params, evaluator final cash", f"{s['test_vector']['best_final_cash']:.2f}"))
    for c in s["confirmation"]:
        rows.append((f"trial {c['trial']}: validation objective, search ({c['search_engine']}) vs broker re-run",
                     f"{c['search_value']} vs {c['broker_value']}"))
    return "<table>" + "".join(f"<tr><th>{html.escape(a)}</th><td>{html.escape(str(b))}</td></tr>"
                               for a, b in rows) + "</table>"
