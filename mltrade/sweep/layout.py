"""Where a sweep looks: validation folds of sessions before a held-out test range (chronological).

    [ unused warm-up ][ val fold 1 ][ val fold 2 ] ... [ val fold F ][ held-out test ]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import pandas as pd


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
