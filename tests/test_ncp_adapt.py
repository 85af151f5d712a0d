"""ATR-binned adaptation: follow where the model is right, flip where it is wrong, skip where both lose."""
from __future__ import annotations

import numpy as np
import pytest

from mltrade.models.ncp.adapt import ATRAdaptation, fit_adaptation


def _case(seed=0, n=300):
    rng = np.random.default_rng(seed)
    atr = rng.uniform(0, 3, n)
    direction = rng.choice([-1, 1], n)
    bin_ = np.floor(atr).astype(int)
    move = rng.choice([-1, 1], n).astype(float)        # which side wins this session
    # bin 0: the model's direction wins; bin 1: the opposite wins; bin 2: both directions lose
    move = np.where(bin_ == 0, direction, np.where(bin_ == 1, -direction, move))
    lr = np.where(move > 0, 0.05, -0.05)
    sr = -lr
    lr = np.where(bin_ == 2, -0.04, lr)
    sr = np.where(bin_ == 2, -0.04, sr)
    return direction, atr, lr, sr


def test_actions_per_bin_follow_flip_skip():
    d, atr, lr, sr = _case()
    ad = fit_adaptation(d, atr, lr, sr, n_bins=3, min_count=5, edges=np.array([1.0, 2.0]))
    assert ad.actions == ["follow", "flip", "skip"]
    out = ad.apply(d, atr)
    b = ad.bin_of(atr)
    np.testing.assert_array_equal(out[b == 0], d[b == 0])
    np.testing.assert_array_equal(out[b == 1], -d[b == 1])
    assert (out[b == 2] == 0).all()
    assert [t["count"] for t in ad.table] == [int((b == k).sum()) for k in range(3)]
    assert "flip" in ad.html() and "<table>" in ad.html()


def test_quantile_edges_and_small_bins_follow():
    d, atr, lr, sr = _case(1, 12)
    ad = fit_adaptation(d, atr, lr, sr, n_bins=3, min_count=50)
    assert ad.actions == ["follow"] * 3
    assert len(ad.edges) == 2 and ad.edges[0] <= ad.edges[1]


def test_round_trip_and_validation():
    d, atr, lr, sr = _case()
    ad = fit_adaptation(d, atr, lr, sr, n_bins=3, min_count=5, edges=np.array([1.0, 2.0]))
    again = ATRAdaptation.from_dict(ad.to_dict())
    np.testing.assert_array_equal(again.apply(d, atr), ad.apply(d, atr))
    with pytest.raises(ValueError, match="actions"):
        ATRAdaptation([1.0], ["follow", "reverse"])
    with pytest.raises(ValueError, match="edges"):
        ATRAdaptation.from_dict({"actions": ["follow"]})
    with pytest.raises(ValueError, match="equal lengths"):
        fit_adaptation(d[:3], atr, lr, sr)
