"""Walk-forward folds: chronological, non-overlapping, embargo respected."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from mltrade.models.walkforward import Fold, fold_of, single_split, walk_forward_folds


def _dates(n):
    return pd.bdate_range("2010-01-01", periods=n)


@settings(max_examples=60, deadline=None)
@given(n_folds=st.integers(1, 5), train=st.integers(1, 50), val=st.integers(0, 20),
       test=st.integers(1, 20), embargo=st.integers(0, 7), extra=st.integers(0, 30),
       expanding=st.booleans())
def test_folds_never_overlap_and_respect_embargo(n_folds, train, val, test, embargo, extra, expanding):
    gap_val = embargo if val else 0
    n = train + gap_val + val + embargo + n_folds * test + extra
    folds = walk_forward_folds(_dates(n), n_folds, train, val, test, embargo, expanding=expanding)
    assert len(folds) == n_folds
    assert folds[-1].test_stop == n
    for f in folds:
        tr = set(range(f.train_start, f.train_stop))
        va = set(range(f.val_start, f.val_stop))
        te = set(range(f.test_start, f.test_stop))
        assert not (tr & va) and not (tr & te) and not (va & te)
        assert f.train_start >= 0 and len(tr) >= train and len(va) == val and len(te) == test
        if not expanding:
            assert len(tr) == train
        # chronological order with the embargo gaps
        if val:
            assert f.val_start - f.train_stop >= embargo
            assert f.test_start - f.val_stop >= embargo
        else:
            assert f.test_start - f.train_stop >= embargo
        assert max(tr) < min(te)
    for a, b in zip(folds, folds[1:]):
        assert a.test_stop == b.test_start  # contiguous, no overlap between test ranges
        assert b.train_start >= a.train_start


def test_not_enough_rows_is_a_clear_error():
    with pytest.raises(ValueError, match=r"need .* rows, but only 10"):
        walk_forward_folds(_dates(10), 2, 5, 2, 2, 1)


def test_unsorted_dates_are_rejected_naming_the_row():
    d = list(_dates(30))
    d[7], d[8] = d[8], d[7]
    with pytest.raises(ValueError, match="row 8"):
        walk_forward_folds(d, 1, 10, 5, 5)


def test_bad_sizes_rejected():
    with pytest.raises(ValueError, match="test"):
        walk_forward_folds(_dates(30), 1, 10, 5, 0)
    with pytest.raises(ValueError, match="train"):
        walk_forward_folds(_dates(30), 1, 2.5, 5, 5)


def test_single_split_and_fold_of_and_describe():
    d = _dates(200)
    f = single_split(d, 0.2, 0.1, embargo=3)
    assert f.test_stop == 200 and f.test_stop - f.test_start == 20
    assert f.val_stop - f.val_start == 40 and f.train_start == 0
    desc = f.describe(d)
    assert desc["test"][1] == str(d[-1].date())
    assert walk_forward_folds(list(range(20)), 1, 5, 5, 5)[0].describe(range(20))["test"] == ["15", "19"]
    folds = walk_forward_folds(d, 3, 50, 20, 30, 2)
    assert fold_of(folds, 199) is folds[-1]
    assert fold_of(folds, 0) is None
    x = np.arange(200)
    assert list(x[folds[0].test]) == list(range(folds[0].test_start, folds[0].test_stop))
