"""Chronological walk-forward folds: train, validation and test ranges with an embargo.

Each fold is laid out in time order as::

    [train][embargo][validation][embargo][test]

Test ranges of consecutive folds are contiguous and never overlap; the last
fold's test range ends at the last row. Train, validation and test of one fold
never overlap, and ``embargo`` rows lie unused between them so that features
computed over a look-back window cannot leak labels across the boundary.
Sizes are numbers of rows (sessions for daily data).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold as half-open row ranges ``[start, stop)``."""

    index: int
    train_start: int
    train_stop: int
    val_start: int
    val_stop: int
    test_start: int
    test_stop: int

    @property
    def train(self) -> slice:
        """Row slice of the training range."""
        return slice(self.train_start, self.train_stop)

    @property
    def val(self) -> slice:
        """Row slice of the validation range."""
        return slice(self.val_start, self.val_stop)

    @property
    def test(self) -> slice:
        """Row slice of the test range."""
        return slice(self.test_start, self.test_stop)

    def describe(self, dates: Sequence[Any]) -> dict:
        """First/last date of each range (for logs and metrics.json)."""
        d = list(dates)

        def fmt(x: Any) -> str:
            try:
                ts = pd.Timestamp(x) if not isinstance(x, (int, float, np.number)) else None
            except (ValueError, TypeError):
                ts = None
            if ts is not None and ts is not pd.NaT and ts == ts.normalize():
                return str(ts.date())
            return str(x)

        def rng(a: int, b: int) -> list:
            return [fmt(d[a]), fmt(d[b - 1])] if b > a else []
        return {"fold": self.index, "train": rng(self.train_start, self.train_stop),
                "val": rng(self.val_start, self.val_stop),
                "test": rng(self.test_start, self.test_stop)}


def _check_positive(name: str, value: Any, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"walk_forward_folds: {name} must be an integer number of rows, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"walk_forward_folds: {name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    return int(value)


def walk_forward_folds(dates: Sequence[Any], n_folds: int, train: int, val: int, test: int,
                       embargo: int = 0, expanding: bool = False) -> List[Fold]:
    """Chronological folds over ``dates`` (strictly increasing); last test ends at the last row.

    ``expanding=True`` starts every training range at row 0 (anchored walk-forward);
    otherwise the training window slides with a fixed length ``train``.
    """
    n_folds = _check_positive("n_folds", n_folds)
    train = _check_positive("train", train)
    val = _check_positive("val", val, allow_zero=True)
    test = _check_positive("test", test)
    embargo = _check_positive("embargo", embargo, allow_zero=True)
    idx = pd.Index(list(dates)) if not isinstance(dates, pd.Index) else dates
    n = len(idx)
    if n > 1 and not (idx.is_monotonic_increasing and idx.is_unique):
        bad = next(i for i in range(1, n) if not idx[i] > idx[i - 1])
        raise ValueError(f"walk_forward_folds: dates must be strictly increasing; row {bad} "
                         f"({idx[bad]!r}) is not after row {bad - 1} ({idx[bad - 1]!r})")
    gap_val = embargo if val > 0 else 0
    need = train + gap_val + val + embargo + n_folds * test
    if need > n:
        raise ValueError(f"walk_forward_folds: {n_folds} folds need train {train} + embargo "
                         f"{gap_val} + val {val} + embargo {embargo} + {n_folds} x test {test} "
                         f"= {need} rows, but only {n} dates were given")
    folds: List[Fold] = []
    for k in range(n_folds):
        test_start = n - (n_folds - k) * test
        test_stop = test_start + test
        val_stop = test_start - embargo
        val_start = val_stop - val
        train_stop = val_start - gap_val
        train_start = 0 if expanding else train_stop - train
        folds.append(Fold(k, train_start, train_stop, val_start, val_stop, test_start, test_stop))
    return folds


def single_split(dates: Sequence[Any], val_frac: float = 0.15, test_frac: float = 0.15,
                 embargo: int = 0) -> Fold:
    """One chronological train/validation/test split by fractions of the rows."""
    n = len(dates)
    if not (0 <= val_frac < 1 and 0 < test_frac < 1 and val_frac + test_frac < 1):
        raise ValueError(f"single_split: need 0 <= val_frac, 0 < test_frac and val_frac + test_frac < 1, "
                         f"got val_frac={val_frac}, test_frac={test_frac}")
    test = max(1, int(round(n * test_frac)))
    val = int(round(n * val_frac))
    train = n - test - val - embargo * (2 if val else 1)
    if train <= 0:
        raise ValueError(f"single_split: {n} rows leave no training data "
                         f"(val {val}, test {test}, embargo {embargo})")
    return walk_forward_folds(dates, 1, train, val, test, embargo)[0]


def fold_of(folds: Sequence[Fold], row: int) -> Optional[Fold]:
    """The fold whose test range contains ``row``, or None."""
    for f in folds:
        if f.test_start <= row < f.test_stop:
            return f
    return None
