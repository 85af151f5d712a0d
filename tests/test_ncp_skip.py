"""The NCP's linear skip is solved as the ladder's L2 logistic regression before the network trains (issue 17,
target 2a): the untrained NCP is that logistic regression exactly, and the network's epochs are kept only where
they beat it on the validation sessions by more than noise."""
from __future__ import annotations

import numpy as np
import pytest

from mltrade.models.ncp.dataset import PayoffSpec, build_dataset
from mltrade.models.ncp.model import NCPConfig, predict_proba, skip_inputs
from mltrade.models.ncp.synthetic import synthetic_daily_history, synthetic_market
from mltrade.models.ncp.fit import FoldTrainer, _significant_gain, config_from_params
from mltrade.models.ncp.settings import NCPSettings

PARAMS = {"dense1": 8, "dense2": 4, "ltc_units": 6, "ltc_units2": 5, "head_units": 4, "branch_head": 2}


@pytest.fixture(scope="module")
def ds():
    bars = synthetic_market("2014-01-02", 160, planted=False, seed=31)
    return build_dataset(bars, n_candles=17, spec=PayoffSpec(spread=0.0),
                         daily_history=synthetic_daily_history(bars, 260, seed=32))


def test_untrained_ncp_is_the_ladders_logistic_regression_exactly(ds):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from mltrade.models.ncp.final import ladder_inputs
    s = NCPSettings(cell="cfc")
    tr = FoldTrainer(config_from_params(PARAMS, ds.daily.shape[1], s, 0), epochs=0, batch_size=32, patience=2)
    train, val, test = ds.subset(slice(0, 100)), ds.subset(slice(101, 130)), ds.subset(slice(131, len(ds)))
    model = tr.fit(train, val)
    C = tr.skip_info["C"]
    assert C in (0.001, 0.01, 0.1, 1.0, 10.0) and tr.skip_info["val_loss"] == pytest.approx(tr.val_loss, abs=1e-6)
    X = ladder_inputs(ds)
    np.testing.assert_allclose(X, skip_inputs(ds.daily, ds.seq))  # the ladder's inputs, in the same order
    y = (ds.label > 0).astype(int)
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000)).fit(X[:100], y[:100])
    np.testing.assert_allclose(predict_proba(model, test.daily, test.seq), ref.predict_proba(X[131:])[:, 1],
                               atol=2e-5)
    # C is the grid's best on the early-stopping sessions (log-loss), the ladder's grid
    losses = []
    for c in (0.001, 0.01, 0.1, 1.0, 10.0):
        p = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)).fit(
            X[:100], y[:100]).predict_proba(X[101:130])[:, 1]
        losses.append(-np.mean(y[101:130] * np.log(p) + (1 - y[101:130]) * np.log(1 - p)))
    assert C == (0.001, 0.01, 0.1, 1.0, 10.0)[int(np.argmin(losses))]


def test_network_epochs_are_kept_only_when_they_beat_the_logistic_by_more_than_noise(ds):
    s = NCPSettings(cell="cfc")
    train, val = ds.subset(slice(0, 100)), ds.subset(slice(101, 130))
    tr = FoldTrainer(config_from_params(dict(PARAMS, learning_rate=0.03), ds.daily.shape[1], s, 0), epochs=8,
                     batch_size=16, patience=8)
    model = tr.fit(train, val)
    h = tr.history.history
    assert len(h["val_loss"]) >= 1
    # the returned model is the logistic skip alone unless an epoch's gain is significant
    assert tr.val_loss <= h["val_loss_start"][0]
    # the skip is frozen: its weights are the logistic's, whatever the network did
    skip0 = FoldTrainer(config_from_params(PARAMS, ds.daily.shape[1], s, 0), 0, 16, 2)
    skip0.fit(train, val)
    for a, b in zip(model.get_layer("skip_logit").get_weights(), skip0.model.get_layer("skip_logit").get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # the gate: a mean gain above z standard errors, one-sided
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1e-2, 120)
    assert not _significant_gain(noise - noise.mean() + 1e-4, 2.0)
    assert _significant_gain(noise - noise.mean() + 5e-3, 2.0)
    assert _significant_gain(np.full(5, 1e-6), 0.0) and not _significant_gain(-np.abs(noise), 0.0)


def test_joint_skip_is_still_an_option_and_bad_values_are_named():
    assert NCPConfig().skip_fit == "logistic"
    with pytest.raises(ValueError, match="skip_fit"):
        NCPConfig(skip_fit="ridge")
    cfg = config_from_params({"skip_fit": "joint"}, 10, NCPSettings(cell="cfc"))
    assert cfg.skip_fit == "joint"
