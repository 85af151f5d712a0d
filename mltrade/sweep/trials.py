"""What each trial of a sweep carries in the study, and reading it back.

User attributes: ``sweep_uid`` (``worker:run:sequence``, unique: the worker that ran it and the
``optimize`` call that added it) and ``sweep_returns`` (its validation session returns, folds in order,
:func:`mltrade.pbo.encode_returns`). Intermediate values: the running mean of the fold values.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import pandas as pd

from mltrade.pbo import decode_returns

#: user attribute holding a trial's per-session validation returns (see :func:`mltrade.pbo.encode_returns`)
RETURNS_ATTR = "sweep_returns"
#: user attribute holding a trial's unique id, ``worker:run:sequence``
UID_ATTR = "sweep_uid"


def uid_of(trial) -> str:
    """The trial's ``sweep_uid`` (``remote:<number>`` for a trial added by something else)."""
    return trial.user_attrs.get(UID_ATTR) or f"remote:{trial.number}"


def trial_returns(trial) -> Optional[np.ndarray]:
    """The trial's validation session returns (folds in order; a pruned trial's stop early), None if not stored."""
    text = trial.user_attrs.get(RETURNS_ATTR)
    return None if text is None else decode_returns(text)


def worker_of(trial) -> str:
    """The worker that ran ``trial`` (from its ``sweep_uid``)."""
    return str(trial.user_attrs.get(UID_ATTR, "")).split(":")[0]


def run_of(trial) -> str:
    """The command run (``optimize`` call) that added ``trial`` (from its ``sweep_uid``)."""
    parts = str(trial.user_attrs.get(UID_ATTR, "")).split(":")
    return parts[1] if len(parts) == 3 else ""


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
    for t in study.get_trials(deepcopy=False):
        row = {"number": t.number, "state": t.state.name, "value": t.value,
               "worker": worker_of(t), **fold_values(t),
               **{f"param_{k}": v for k, v in t.params.items()}}
        rows.append(row)
    return pd.DataFrame(rows)
