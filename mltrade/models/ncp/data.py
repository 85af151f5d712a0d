"""The sessions the settings name: their bars, the dataset built from them (cached on disk) and its folds.

:mod:`.dataset` builds features and labels from bars; this module decides which bars, keeps the built
dataset under ``state_dir/cache`` and cuts it into the walk-forward layout (:func:`split`).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Optional, Tuple

import numpy as np
import pandas as pd

from mltrade.models.ncp.dataset import NCPDataset, build_dataset
from mltrade.models.ncp.history import daily_history_for
from mltrade.models.ncp.settings import NCPSettings
from mltrade.models.walkforward import Fold, walk_forward_folds


def load_bars(s: NCPSettings) -> pd.DataFrame:
    """The intraday bars the settings name (sample, CSV file or twelvedata:SYMBOL cache), cut to start/end."""
    from mltrade.backtest import bars_for

    return bars_for(s.data, s.start, s.end, seed=int(s.seed), interval=int(s.interval), field="ncp")


def dataset_for(s: NCPSettings, bars: Optional[pd.DataFrame] = None,
                daily_history: Optional[pd.DataFrame] = None) -> NCPDataset:
    """One sample per session of the configured data (sample data: real daily history for the warm-up)."""
    bars = load_bars(s) if bars is None else bars
    if daily_history is None:
        daily_history = daily_history_for(bars, s.daily_history)
    return build_dataset(bars, n_candles=s.n_candles, spec=s.payoff(), calendar=s.exchange,
                         interval=s.interval, seq_distance=s.seq_distance, daily_history=daily_history)


#: settings that change the dataset (the cache key holds them, the data's fingerprint and the code's)
_DATASET_KEYS = ("data", "start", "end", "seed", "exchange", "interval", "n_candles", "distance",
                 "seq_distance", "stop", "ratio", "spread", "fx", "kind", "barrier_buffer", "daily_history")
_DATASET_CODE = ("feeds/sample.py", "feeds/loader.py", "models/features.py", "models/ncp/dataset.py",
                 "calendars.py", "products.py")


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dataset_key(s: NCPSettings) -> Optional[str]:
    """Hash of the data (file contents; the generator's code for the sample), the dataset settings and the
    feature code, or None when the data can't be fingerprinted without loading it (e.g. twelvedata:)."""
    import mltrade
    root = Path(mltrade.__file__).parent
    parts = {k: getattr(s, k) for k in _DATASET_KEYS}
    if s.data != "sample":
        if not os.path.isfile(s.data):
            return None
        parts["data_digest"] = _file_digest(s.data)
    if s.daily_history:
        parts["daily_history_digest"] = _file_digest(s.daily_history)
    parts["code"] = {c: _file_digest(str(root / c)) for c in _DATASET_CODE if (root / c).exists()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def save_dataset(ds: NCPDataset, path: str) -> str:
    """Write a dataset as ``.npz`` atomically (temp file + ``os.replace``); returns the path."""
    path = str(path)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-ncp-", suffix=".npz", dir=d)
    os.close(fd)
    try:
        np.savez(tmp, dates=np.asarray(ds.dates).astype("datetime64[D]"), daily=ds.daily, seq=ds.seq,
                 atr=ds.atr, price=ds.price, label=ds.label, long_return=ds.long_return,
                 short_return=ds.short_return, long_exit=np.asarray(ds.long_exit, str),
                 short_exit=np.asarray(ds.short_exit, str), feature_names=np.asarray(ds.feature_names, str))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_dataset(path: str) -> NCPDataset:
    """A dataset written by :func:`save_dataset` (errors name the file)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable NCP dataset cache ({exc})") from exc
    need = {"dates", "daily", "seq", "atr", "price", "label", "long_return", "short_return", "long_exit",
            "short_exit", "feature_names"}
    if need - set(a):
        raise ValueError(f"{path}: NCP dataset cache misses {sorted(need - set(a))}")
    return NCPDataset(a["dates"], a["daily"], a["seq"], a["atr"], a["price"],
                      [str(x) for x in a["feature_names"]],
                      a["label"], a["long_return"], a["short_return"], a["long_exit"].astype(object),
                      a["short_exit"].astype(object))


def cached_dataset(s: NCPSettings, log: Callable[[str], None] = lambda m: None) -> NCPDataset:
    """:func:`dataset_for`, through the on-disk cache under ``state_dir/cache`` (keyed by
    :func:`dataset_key`); workers on one machine build it once and share it."""
    key = dataset_key(s) if s.dataset_cache else None
    if key is None:
        return dataset_for(s)
    path = Path(s.state_dir) / "cache" / f"ncp-dataset-{key}.npz"
    if path.exists():
        try:
            ds = load_dataset(str(path))
            log(f"dataset: {len(ds)} sessions from the cache {path}")
            return ds
        except ValueError as exc:
            log(f"dataset cache unreadable, rebuilding: {exc}")
    ds = dataset_for(s)
    save_dataset(ds, str(path))
    log(f"dataset: {len(ds)} sessions built, cached in {path}")
    return ds


def split(ds: NCPDataset, s: NCPSettings) -> Tuple[list, Fold]:
    """Search folds, and the final fold: train | its own early-stopping val | holdout (test).

    The search region ends ``embargo`` sessions before the final val, which ends ``embargo`` sessions
    before the holdout: selection (folds' scored ranges), early stopping of the final model and the
    holdout never share a session.
    """
    n = len(ds)
    final = walk_forward_folds(np.arange(n), 1, s.train_sessions, s.val_sessions, s.holdout_sessions,
                               s.embargo, expanding=bool(s.expanding))[0]
    n_search = final.val_start - s.embargo if s.val_sessions > 0 else final.test_start - s.embargo
    folds = walk_forward_folds(np.arange(max(n_search, 0)), s.n_folds, s.train_sessions, s.val_sessions,
                               s.score_sessions, s.embargo, expanding=bool(s.expanding))
    return folds, final


def selection_range(ds: NCPDataset, folds: list) -> list:
    """First and last session of the folds' scored ranges (where trials and models are compared)."""
    return [str(ds.dates[folds[0].test_start]), str(ds.dates[folds[-1].test_stop - 1])]


def fold_datasets(ds: NCPDataset, folds: list) -> list:
    """Each fold's (train, val, scored) datasets, cut once per study and reused by every trial."""
    return [(ds.subset(f.train), ds.subset(f.val), ds.subset(f.test)) for f in folds]
