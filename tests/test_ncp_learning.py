"""The NCP model learns a planted early-session pattern out of sample, and finds nothing in a random walk.

Uses the CfC cell (the property does not depend on the cell; CfC trains about 2x faster than LTC).
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from mltrade.models.ncp.dataset import PayoffSpec, build_dataset
from mltrade.models.ncp.fit import FoldTrainer, config_from_params
from mltrade.models.ncp.model import predict_proba
from mltrade.models.ncp.scoring import directions
from mltrade.models.ncp.settings import NCPSettings
from mltrade.models.ncp.synthetic import synthetic_daily_history, synthetic_market
from mltrade.models.walkforward import single_split

PARAMS = {"dense1": 16, "dense2": 8, "dense_dropout": 0.1, "ltc_units": 10, "ltc_units2": 6, "branch_head": 4,
          "head_units": 8, "head_dropout": 0.0, "learning_rate": 5e-3}


def _oos_accuracy(planted: bool, seed: int):
    bars = synthetic_market("2012-01-01", 420, planted=planted, seed=seed)
    ds = build_dataset(bars, n_candles=17, spec=PayoffSpec(spread=0.0),
                       daily_history=synthetic_daily_history(bars, 260, seed=seed))
    fold = single_split(ds.dates, val_frac=0.12, test_frac=0.3, embargo=1)  # chronological
    s = NCPSettings(cell="cfc", patience=5)
    trainer = FoldTrainer(config_from_params(dict(PARAMS, cell="cfc"), ds.daily.shape[1], s, seed), epochs=25,
                          batch_size=32, patience=5)
    train, val, test = ds.subset(fold.train), ds.subset(fold.val), ds.subset(fold.test)
    assert train.dates[-1] < val.dates[0] < test.dates[0]
    model = trainer.fit(train, val)
    d = directions(predict_proba(model, test.daily, test.seq))
    truth = np.where(test.label > 0, 1, -1)
    return int((d == truth).sum()), len(test), float(test.label.mean())


@pytest.mark.slow
def test_planted_pattern_is_learnt_out_of_sample():
    hits, n, _ = _oos_accuracy(planted=True, seed=11)
    assert n >= 100
    assert hits / n > 0.60, f"out-of-sample accuracy {hits}/{n}"


@pytest.mark.slow
def test_random_walk_not_significantly_above_chance():
    hits, n, base = _oos_accuracy(planted=False, seed=12)
    # the null is the best constant guess on these sessions (no information beyond the class balance)
    p0 = max(base, 1 - base)
    p = binomtest(hits, n, p0, alternative="greater").pvalue
    assert p > 0.01, f"{hits}/{n} correct vs constant-guess rate {p0:.3f}: p = {p:.4f}"
