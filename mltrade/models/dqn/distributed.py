"""DQN ensembles trained across machines: every candidate agent is a job in a shared Optuna RDB study.

One training run (``[dqn]`` config) is one Optuna study, by default named ``dqn-<hash of the config>``
(``registry`` and ``name`` excluded), in any RDB storage Optuna supports (``postgresql://`` for several
machines, ``sqlite:///`` for one). Its layout::

    study user attrs  config      the run's [dqn] config (workers train from it, not from their own)
                      jobs        the job keys, set once every job is enqueued (the study is ready)
                      agent:KEY   a finished job's agent (RDB artefacts; see ``artifacts``)
    trial per job     WAITING -> RUNNING (claimed) -> COMPLETE (value: the candidate's validation return)
                      user attrs: job (fold, session, candidate), seed, worker, seconds, sha256, artefact

* The first process to create the study (creation is atomic in the RDB) stores the config and enqueues
  one trial per candidate agent per session kind and fold; the others wait until ``jobs`` is set.
* A worker claims a WAITING trial atomically (Optuna's WAITING -> RUNNING state change succeeds for one
  process only), records Optuna heartbeats while it trains, writes the agent (atomic file in the shared
  ``artifacts`` folder, or a study attribute in the RDB) and completes the trial.
* A worker that dies stops its heartbeat; after the grace period any live process fails that trial
  (``optuna.storages.fail_stale_trials``) and enqueues the same job again, which one of them then runs.
* :meth:`DistributedTraining.assemble` runs :func:`~mltrade.models.dqn.pipeline.train_walk_forward` with the
  workers' agents in place of local training: the same selection on validation, gates, holdout figures and
  registry offer as a single-machine run, and the same result for the same seeds (training is seeded per
  candidate; tested).
"""
from __future__ import annotations

import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from mltrade.models.dqn.jobs import UNTRAINED_KEYS, Job, canonical, default_study_name, run_key
from mltrade.models.dqn.packing import pack, unpack
from mltrade.optuna_storage import Heartbeat, WorkerIdentity, normalise_url, open_storage, redact

__all__ = ["Job", "DistributedTraining", "run_key", "default_study_name"]


class DistributedTraining:
    """A training run's jobs in a shared Optuna RDB study: create/join, work, assemble.

    ``url``: Optuna RDB URL; ``cfg``: the ``[dqn]`` config (``None``: join the existing ``study`` and
    train from its stored config); ``artifacts``: a folder every worker shares for the agents (``None``:
    the agents go into the RDB); ``heartbeat``: seconds between heartbeats (a job is taken over after
    ``grace`` seconds without one, default 3 heartbeats); ``check_config``: refuse to join a study created
    with different training settings (``False``: a worker adopts the study's config).
    """

    def __init__(self, url: str, cfg: Optional[dict] = None, study: Optional[str] = None,
                 artifacts: Optional[str | Path] = None, heartbeat: int = 10, grace: Optional[int] = None,
                 log: Callable[[str], None] = print, worker: Optional[str] = None,
                 check_config: bool = True) -> None:
        if cfg is None and not study:
            raise ValueError("DistributedTraining: give the [dqn] config or the name of an existing study")
        if int(heartbeat) < 1:
            raise ValueError(f"heartbeat: expected whole seconds >= 1, got {heartbeat!r}")
        self.url = normalise_url(url)
        self.study_name = study or default_study_name(cfg or {})
        self.artifacts = Path(artifacts) if artifacts else None
        self.heartbeat = int(heartbeat)
        self.grace = int(grace) if grace is not None else 3 * self.heartbeat
        self.log = log
        self.check_config = bool(check_config)
        self.worker = worker or WorkerIdentity.here().name
        self._storage = self._open_storage()
        self.study, self.created = self._create_or_load(cfg)
        self.study_id = self._storage.get_study_id_from_name(self.study_name)
        self.cfg, self.jobs = self._ready(cfg)
        self._cache: Dict[int, tuple] = {}
        self._data: Any = None

    # ----------------------------------------------------------------- the study
    def _open_storage(self) -> Any:
        import optuna

        # Optuna's heartbeat (and fail_stale_trials) are marked experimental: say it once, in the docs
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        return open_storage(self.url, heartbeat_interval=self.heartbeat, grace_period=self.grace,
                            heartbeat_stale_trial_callback=self._requeue)

    def _create_or_load(self, cfg: Optional[dict]) -> Tuple[Any, bool]:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if cfg is not None:
            try:
                return optuna.create_study(study_name=self.study_name, storage=self._storage,
                                           direction="maximize"), True
            except optuna.exceptions.DuplicatedStudyError:
                pass
        try:
            return optuna.load_study(study_name=self.study_name, storage=self._storage), False
        except KeyError as exc:
            raise ValueError(f"study {self.study_name!r}: no such study in {redact(self.url)}") from exc

    def _ready(self, cfg: Optional[dict]) -> Tuple[dict, List[Job]]:
        """The creator stores the config and enqueues the jobs; everyone else waits for them."""
        if self.created:
            assert cfg is not None
            jobs = self._enqueue(cfg)
            return cfg, jobs
        deadline = time.time() + 120
        while True:
            attrs = self._storage.get_study_user_attrs(self.study_id)
            if "jobs" in attrs and "config" in attrs:
                break
            if time.time() > deadline:
                raise ValueError(f"study {self.study_name!r}: its creator never finished enqueueing the jobs "
                                 f"(no 'jobs' attribute after 120 s); delete the study and start again")
            time.sleep(1.0)
        stored = attrs["config"]
        if cfg is not None and self.check_config:
            diff = sorted(k for k in set(canonical(cfg)) | set(canonical(stored))
                          if canonical(cfg).get(k) != canonical(stored).get(k))
            if diff:
                raise ValueError(f"study {self.study_name!r} was created with a different [dqn] config "
                                 f"(keys {diff}); use the same config, or another --study")
        return stored, [Job.from_dict(j) for j in attrs["jobs"]]

    def _enqueue(self, cfg: dict) -> List[Job]:
        from mltrade.models.dqn.pipeline import training_data

        data = training_data(cfg)                  # bad settings fail here, before any job exists
        self._data = data
        n = max(int(cfg["candidates"]), int(cfg["agents"]))
        jobs = [Job(f.index, s, i) for f in data.folds for s in data.sessions for i in range(n)]
        self._storage.set_study_user_attr(self.study_id, "config", json.loads(json.dumps(cfg, default=str)))
        for job in jobs:
            self.study.enqueue_trial({}, user_attrs={"job": job.to_dict(), "key": job.key})
        self._storage.set_study_user_attr(self.study_id, "jobs", [j.to_dict() for j in jobs])
        return jobs

    def _requeue(self, study: Any, trial: Any) -> None:
        """Heartbeat-stale trial (its worker died): enqueue the same job again."""
        job = trial.user_attrs.get("job")
        if job is None:
            return
        key = Job.from_dict(job).key
        study.enqueue_trial({}, user_attrs={"job": job, "key": key, "retry_of": trial.number})
        self.log(f"job {key}: trial {trial.number} lost its worker (no heartbeat for "
                 f"{self.grace} s); enqueued again")

    # ------------------------------------------------------------------ progress
    def trials(self, states: Optional[tuple] = None) -> list:
        """The study's trials (``states``: Optuna TrialStates to keep)."""
        return self._storage.get_all_trials(self.study_id, deepcopy=False, states=states)

    def status(self) -> Dict[str, Any]:
        """Job counts: total, done (a COMPLETE trial), running, waiting, failed trials; missing job keys."""
        from optuna.trial import TrialState

        ts = self.trials()
        done = {t.user_attrs.get("key") for t in ts if t.state == TrialState.COMPLETE}
        pending = {t.user_attrs.get("key") for t in ts if t.state in (TrialState.WAITING, TrialState.RUNNING)}
        keys = [j.key for j in self.jobs]
        return {"jobs": len(keys), "done": sum(k in done for k in keys),
                "running": sum(t.state == TrialState.RUNNING for t in ts),
                "waiting": sum(t.state == TrialState.WAITING for t in ts),
                "failed": sum(t.state == TrialState.FAIL for t in ts),
                "lost": [k for k in keys if k not in done and k not in pending]}

    # ------------------------------------------------------------------- working
    def claim(self) -> Optional[Tuple[int, Any]]:
        """Claim one waiting job atomically: ``(trial id, trial)``, or ``None`` when none is waiting."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        for t in self.trials((TrialState.WAITING,)):
            if "job" not in t.user_attrs:
                continue
            tid = self._storage.get_trial_id_from_study_id_trial_number(self.study_id, t.number)
            # the heartbeat first: a worker that dies right after claiming still leaves a stale trial behind
            self._storage.record_heartbeat(tid)
            try:
                if self._storage.set_trial_state_values(tid, TrialState.RUNNING):
                    return tid, t
            except UpdateFinishedTrialError:      # finished meanwhile: try the next one
                continue
        return None

    def _fold_inputs(self, fold_index: int) -> tuple:
        from mltrade.models.dqn.pipeline import fold_candidates, training_data

        if self._data is None:
            self._data = training_data(self.cfg)
        if fold_index not in self._cache:
            fold = self._data.folds[fold_index]
            fold_obs, _ = self._data.fold_observations(self.cfg, fold)
            self._cache = {fold_index: (fold,) + tuple(fold_candidates(self.cfg, fold_obs, fold))}
        return self._cache[fold_index]

    def train_job(self, job: Job) -> Tuple[Any, float, dict]:
        """Train ``job``'s agent here; returns the agent, its validation return and its spec."""
        from mltrade.models.dqn.env import action_table
        from mltrade.models.dqn.pipeline import _score, costs_from, train_candidate

        fold, _scaler, scaled, specs = self._fold_inputs(job.fold)
        spec = dict(specs[job.candidate])
        agent = train_candidate(self.cfg, scaled, self._data.daily, job.session, spec, self._data.sim)
        # the candidate's own validation return (as train_session_fold scores it; informational here)
        lb, sb = self.cfg.get("long_barriers"), self.cfg.get("short_barriers")
        directions, distances = action_table(*([] if lb is None else [lb, sb]))
        val = scaled.iloc[fold.val]
        ok = np.isfinite(val.to_numpy(float)).all(1)
        acts = np.zeros(len(val), int)
        if ok.any():
            acts[ok] = agent.compute_batch_q_values(val.to_numpy(float)[ok][:, None, :]).argmax(axis=1)
        d = np.where(ok, directions[acts], 0)
        score = _score(self._data.daily.iloc[fold.val], d, distances[acts], costs_from(self.cfg), job.session,
                       self._data.sim)
        return agent, float(score), spec

    def _store(self, job: Job, number: int, blob: bytes) -> str:
        """Write the agent of trial ``number`` (one name per trial: a job run twice never overwrites)."""
        if self.artifacts is None:
            self._set_attr(f"agent:{job.key}:t{number}", blob.decode("ascii"))
            return "rdb"
        from mltrade.io import atomic_write_bytes

        path = self.artifacts / self.study_name / f"{job.key}.t{number}.agent.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, blob)
        return str(path)

    def _set_attr(self, key: str, value: Any) -> None:
        import sqlalchemy.exc

        for attempt in range(3):     # two processes writing the same new key at once: the loser updates it
            try:
                self._storage.set_study_user_attr(self.study_id, key, value)
                return
            except sqlalchemy.exc.IntegrityError:
                if attempt == 2:
                    raise
                time.sleep(0.2)

    def run_one(self) -> Optional[Job]:
        """Claim one waiting job, train it, store the agent, complete the trial; ``None`` if none waits."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        claimed = self.claim()
        if claimed is None:
            return None
        tid, t = claimed
        job = Job.from_dict(t.user_attrs["job"])
        t0 = time.time()
        with Heartbeat(self._storage, tid, self.heartbeat):
            try:
                agent, score, spec = self.train_job(job)
                blob = pack(agent)
                where = self._store(job, t.number, blob)
            except BaseException:
                try:
                    self._storage.set_trial_state_values(tid, TrialState.FAIL)
                except UpdateFinishedTrialError:
                    pass
                raise
        try:
            for k, v in (("worker", self.worker), ("seconds", round(time.time() - t0, 2)),
                         ("seed", spec["seed"]), ("sha256", hashlib.sha256(blob).hexdigest()),
                         ("artefact", where)):
                self._storage.set_trial_user_attr(tid, k, v)
            self._storage.set_trial_state_values(tid, TrialState.COMPLETE, [score])
        except UpdateFinishedTrialError:
            # this process missed its heartbeats and another one failed the trial and enqueued the job again:
            # the retry's agent (the same: training is seeded) is the one used
            self.log(f"{self.worker}: job {job.key} (trial {t.number}) was taken over meanwhile; "
                     "result dropped")
            return job
        self.log(f"{self.worker}: job {job.key} (trial {t.number}) done in {time.time() - t0:.1f} s, "
                 f"validation return {score:+.2%}")
        return job

    def work(self, wait: bool = False, poll: float = 2.0) -> int:
        """Run jobs until none is waiting (``wait``: until every job is done, taking over the jobs of
        workers that died); returns the number of jobs this process ran."""
        from optuna.storages import fail_stale_trials

        ran = 0
        while True:
            fail_stale_trials(self.study)
            if self.run_one() is not None:
                ran += 1
                continue
            st = self.status()
            if st["done"] == st["jobs"] or not wait:
                return ran
            if st["lost"] and not st["running"]:
                # a job failed (its worker raised) and nobody re-enqueued it: this process runs it again
                for key in st["lost"]:
                    job = next(j for j in self.jobs if j.key == key)
                    self.study.enqueue_trial({}, user_attrs={"job": job.to_dict(), "key": key})
                continue
            time.sleep(poll)

    # ------------------------------------------------------------------ assembly
    def load_agent(self, job: Job, _done: Optional[dict] = None, _attrs: Optional[dict] = None) -> Any:
        """The agent a worker trained for ``job`` (checked against the recorded sha256)."""
        from optuna.trial import TrialState

        if _done is None:
            _done = {}
            for tr in self.trials((TrialState.COMPLETE,)):
                _done.setdefault(tr.user_attrs.get("key"), tr)
        t = _done.get(job.key)
        if t is None:
            raise ValueError(f"study {self.study_name!r}: job {job.key} has no completed trial")
        where = t.user_attrs["artefact"]
        if where == "rdb":
            attrs = _attrs if _attrs is not None else self._storage.get_study_user_attrs(self.study_id)
            blob = attrs[f"agent:{job.key}:t{t.number}"].encode("ascii")
        else:
            p = Path(where)
            if not p.exists():
                raise FileNotFoundError(f"job {job.key}: artefact {p} (written by "
                                        f"{t.user_attrs.get('worker')}) is missing: --artifacts must be a "
                                        "folder every worker shares")
            blob = p.read_bytes()
        if hashlib.sha256(blob).hexdigest() != t.user_attrs["sha256"]:
            raise ValueError(f"job {job.key}: artefact {where} does not match the sha256 its worker recorded")
        return unpack(blob, f"job {job.key} ({where})")

    def assemble(self, cfg: Optional[dict] = None, progress: bool = False,
                 log: Optional[Callable[[str], None]] = None) -> dict:
        """Build the ensembles from the workers' agents exactly as the single-machine run would
        (:func:`~mltrade.models.dqn.pipeline.train_walk_forward`); ``cfg``: registry/name overrides."""
        from mltrade.models.dqn.pipeline import train_walk_forward

        st = self.status()
        if st["done"] != st["jobs"]:
            raise ValueError(f"study {self.study_name!r}: {st['jobs'] - st['done']} of {st['jobs']} jobs are "
                             "not done yet; run workers (train dqn --storage URL --worker) until they are")
        run_cfg = dict(self.cfg)
        for k in UNTRAINED_KEYS:
            if cfg is not None and k in cfg:
                run_cfg[k] = cfg[k]

        from optuna.trial import TrialState

        done: dict = {}
        for t in self.trials((TrialState.COMPLETE,)):          # the first completed trial of each job
            done.setdefault(t.user_attrs.get("key"), t)
        attrs = self._storage.get_study_user_attrs(self.study_id)  # read once: the RDB agents live here

        def source(fold: int, session: str, i: int, spec: dict) -> Any:
            agent = self.load_agent(Job(fold, session, i), done, attrs)
            if agent.seed != spec["seed"]:
                raise ValueError(f"job {Job(fold, session, i).key}: the stored agent has seed {agent.seed}, "
                                 f"the run expects {spec['seed']}")
            return agent

        summary = train_walk_forward(run_cfg, progress=progress, log=log or self.log, agent_source=source)
        summary["study"] = self.study_name
        summary["jobs"] = st["jobs"]
        return summary

    def describe(self) -> str:
        """One line: study, storage, jobs and where the agents go."""
        folds = len({j.fold for j in self.jobs})
        sessions = sorted({j.session for j in self.jobs})
        per = len(self.jobs) // max(1, folds * len(sessions))
        how = "created" if self.created else "joined"
        return (f"study {self.study_name} in {redact(self.url)} ({how}): {len(self.jobs)} jobs "
                f"({folds} fold(s) x {','.join(sessions)} x {per} candidates); agents -> "
                f"{self.artifacts / self.study_name if self.artifacts else 'the RDB'}")
