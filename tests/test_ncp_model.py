"""NCP model: builds (LTC and CfC), trains a step, saves and reloads with identical predictions."""
from __future__ import annotations

import numpy as np
import pytest

from mltrade.models.ncp.model import NCPConfig, build_model, load_model, predict_proba, save_model


def _data(n=48, f=7, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(3, 2, (n, f)).astype("float32"), rng.normal(0, 0.01, (n, 17, 6)).astype("float32"),
            (rng.random(n) > 0.5).astype("float32"))


@pytest.fixture(scope="module")
def trained_ltc():
    d, s, y = _data()
    cfg = NCPConfig(n_daily=d.shape[1], cell="ltc", dense_units=(8, 4), ltc_units=6, ltc_units2=5,
                    branch_head=2, head_units=4)
    model = build_model(cfg, d, s)
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch([d, s], y)
    return model, before, float(np.ravel(loss)[0]), (d, s, y)


def test_ltc_model_structure_and_one_training_step(trained_ltc):
    model, before, loss, (d, s, y) = trained_ltc
    from ncps.keras import LTC
    rnn = [l for l in model.layers if isinstance(l, LTC)]
    assert len(rnn) == 2 and rnn[0].return_sequences and not rnn[1].return_sequences
    # AutoNCP(units, units - 3): motor neurons = units - 3
    assert rnn[0].output.shape[-1] == 3 and rnn[1].output.shape[-1] == 2
    assert model.get_layer("daily_head").activation.__name__ == "sigmoid"
    assert model.get_layer("candles_head").activation.__name__ == "sigmoid"
    assert np.isfinite(loss)
    changed = [not np.array_equal(a, b) for a, b in zip(before, model.get_weights())]
    assert any(changed), "one training step must change the weights"
    p = predict_proba(model, d, s)
    assert p.shape == (len(d),) and np.all((p > 0) & (p < 1))


def test_save_load_round_trip_identical_predictions(trained_ltc, tmp_path):
    model, _, _, (d, s, _) = trained_ltc
    path = save_model(model, str(tmp_path / "m.keras"))
    again = load_model(path)
    np.testing.assert_array_equal(predict_proba(model, d, s), predict_proba(again, d, s))
    # input standardisation travels with the file
    np.testing.assert_array_equal(model.get_layer("daily_norm").get_weights()[0],
                                  again.get_layer("daily_norm").get_weights()[0])
    assert not list(tmp_path.glob(".tmp-*")), "temp file must be renamed away"


def test_cfc_alternative_cell_builds_and_trains():
    d, s, y = _data(32, 5, 1)
    model = build_model(NCPConfig(n_daily=5, cell="cfc", dense_units=(4,), ltc_units=5, ltc_units2=5), d, s)
    from ncps.keras import CfC
    assert sum(isinstance(l, CfC) for l in model.layers) == 2
    assert np.isfinite(np.ravel(model.train_on_batch([d, s], y))[0])


@pytest.mark.parametrize("kw, field", [({"cell": "lstm"}, "cell"), ({"ltc_units": 4}, "ltc_units"),
                                       ({"dense_dropout": 1.0}, "dense_dropout"),
                                       ({"dense_units": ()}, "dense_units")])
def test_config_rejects_bad_values(kw, field):
    with pytest.raises(ValueError, match=field):
        NCPConfig(n_daily=3, **kw)


def test_save_requires_keras_suffix_and_load_names_missing_file(trained_ltc, tmp_path):
    with pytest.raises(ValueError, match=r"\.keras"):
        save_model(trained_ltc[0], str(tmp_path / "m.h5"))
    with pytest.raises(FileNotFoundError, match="nope.keras"):
        load_model(str(tmp_path / "nope.keras"))


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown keys"):
        NCPConfig.from_dict({"n_daily": 3, "bogus": 1})
    assert NCPConfig.from_dict(NCPConfig(n_daily=3).to_dict()).n_daily == 3
