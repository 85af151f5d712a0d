"""Finished trials written to an Optuna RDB storage in one transaction per batch.

``optuna.Study.add_trials`` writes a trial at a time, and each trial costs
about twenty SQL round trips (the trial row, then every parameter, value,
intermediate value and attribute looked up and written one by one, each with
its own check of the trial's state): a 1,000-trial sweep spent ~19 s of its
~41 s CPU there. :func:`add_finished_trials` writes the same rows -- the
tables and encodings of Optuna's own ``RDBStorage`` -- for a whole batch at
once: one study lock, one batched insert per table, one commit. Trial numbers
are assigned as Optuna assigns them (the count of the study's trials with a
smaller ``trial_id``), under the same lock on the study row, so workers
writing one study concurrently still get unique, gap-free numbers; a
parameter whose distribution conflicts with the study's is refused as Optuna
refuses it, before anything is written. Other storages (in-memory, journal)
go through ``Study.add_trials``.
"""
from __future__ import annotations

import json
import logging
import random
import time
from typing import Dict, Sequence

from mltrade.optuna_storage import rdb_of

log = logging.getLogger(__name__)


def add_finished_trials(study, trials: Sequence) -> None:
    """Add finished ``FrozenTrial``s to ``study`` as ``study.add_trials`` does, in one transaction per call."""
    trials = list(trials)
    if not trials:
        return
    backend = rdb_of(study)
    if backend is None:
        study.add_trials(trials)
        return
    for t in trials:
        if not t.state.is_finished():
            raise ValueError(f"trial {t.number}: only finished trials can be added, got state {t.state.name}")
        t._validate()
    import optuna
    import sqlalchemy.exc

    for attempt in range(1, 6):
        try:
            _write(backend, study._study_id, trials)
            return
        except (sqlalchemy.exc.OperationalError, optuna.exceptions.StorageInternalError) as exc:
            # a lock timeout or deadlock between workers: roll back and retry, as Optuna does for one trial
            if attempt == 5:
                raise
            log.info("writing %d trials: %s, retrying", len(trials), type(exc).__name__)
            time.sleep(random.random() * 2.0)


def _utc_naive(value):
    """A trial datetime as ``RDBStorage`` stores it: naive UTC (local naive times are taken as local)."""
    import datetime as dt

    return None if value is None else value.astimezone(dt.timezone.utc).replace(tzinfo=None)


def _write(backend, study_id: int, trials: Sequence) -> None:
    from optuna.storages._rdb import models
    from sqlalchemy import insert

    session = backend.scoped_session()
    try:
        # the lock Optuna takes for a new trial: numbers are counted under it
        models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
        _check_distributions(session, study_id, trials)
        ids = _insert_numbered(session, study_id, trials)
        for model, batch in _rows(ids, trials).items():
            if batch:
                session.execute(insert(model.__table__), batch)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _check_distributions(session, study_id: int, trials: Sequence) -> None:
    """Refuse a parameter whose distribution conflicts with the study's (or another new trial's), as Optuna does."""
    from optuna import distributions
    from optuna.storages._rdb import models
    from sqlalchemy import select

    known: Dict[str, object] = {}
    for name in sorted({n for t in trials for n in t.distributions}):
        row = session.execute(select(models.TrialParamModel.distribution_json)
                              .join(models.TrialModel).where(models.TrialModel.study_id == study_id)
                              .where(models.TrialParamModel.param_name == name).limit(1)).first()
        if row is not None:
            known[name] = distributions.json_to_distribution(row[0])
    for t in trials:
        for name, dist in t.distributions.items():
            if name in known:
                distributions.check_distribution_compatibility(known[name], dist)
            else:
                known[name] = dist


def _insert_numbered(session, study_id: int, trials: Sequence) -> list:
    """Insert the trial rows; number them as Optuna does (the count of the study's trials with a smaller id)."""
    from optuna.storages._rdb import models
    from sqlalchemy import func, insert, select, update

    trial_table = models.TrialModel.__table__
    ids = session.execute(
        insert(trial_table).returning(trial_table.c.trial_id, sort_by_parameter_order=True),
        [{"study_id": study_id, "number": None, "state": t.state, "datetime_start": _utc_naive(t.datetime_start),
          "datetime_complete": _utc_naive(t.datetime_complete)} for t in trials]).scalars().all()
    first = min(ids)
    base = session.execute(select(func.count(trial_table.c.trial_id)).where(
        trial_table.c.study_id == study_id, trial_table.c.trial_id < first)).scalar()
    later = sorted(session.execute(select(trial_table.c.trial_id).where(
        trial_table.c.study_id == study_id, trial_table.c.trial_id >= first)).scalars())
    rank = {tid: base + k for k, tid in enumerate(later)}
    session.execute(update(trial_table).where(trial_table.c.trial_id == _bind("tid")).values(
        number=_bind("num")), [{"tid": tid, "num": rank[tid]} for tid in ids])
    return ids


def _rows(ids: Sequence[int], trials: Sequence) -> Dict[object, list]:
    """Rows of the value, parameter, attribute and intermediate-value tables, per table, in Optuna's encodings."""
    from optuna import distributions
    from optuna.storages._rdb import models

    rows: Dict[object, list] = {m: [] for m in (models.TrialValueModel, models.TrialParamModel,
                                               models.TrialUserAttributeModel, models.TrialSystemAttributeModel,
                                               models.TrialIntermediateValueModel)}
    for tid, t in zip(ids, trials):
        for objective, v in enumerate(t.values if t.values is not None else []):
            stored, kind = models.TrialValueModel.value_to_stored_repr(v)
            rows[models.TrialValueModel].append({"trial_id": tid, "objective": objective, "value": stored,
                                                 "value_type": kind})
        for name, value in t.params.items():
            dist = t.distributions[name]
            rows[models.TrialParamModel].append({"trial_id": tid, "param_name": name,
                                                 "param_value": dist.to_internal_repr(value),
                                                 "distribution_json": distributions.distribution_to_json(dist)})
        for model, attrs in ((models.TrialUserAttributeModel, t.user_attrs),
                             (models.TrialSystemAttributeModel, t.system_attrs)):
            rows[model].extend({"trial_id": tid, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items())
        for step, value in t.intermediate_values.items():
            stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
            rows[models.TrialIntermediateValueModel].append({"trial_id": tid, "step": step,
                                                             "intermediate_value": stored,
                                                             "intermediate_value_type": kind})
    return rows


def _bind(name: str):
    from sqlalchemy import bindparam

    return bindparam(name)
