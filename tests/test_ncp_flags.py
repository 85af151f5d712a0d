"""Degeneracy flags: constant outputs detected, and a holdout-constant model flagged in the NCP report."""
from __future__ import annotations

import numpy as np
import pytest

from mltrade.backtest import run_strategy
from mltrade.config import load_config
from mltrade.models.ncp.adapt import ATRAdaptation
from mltrade.models.ncp.artifact import format_metrics
from mltrade.models.ncp.dataset import build_inputs
from mltrade.models.ncp.model import NCPConfig, build_model
from mltrade.models.ncp.scoring import constant_output, describe_constant, directions
from mltrade.models.ncp.synthetic import synthetic_daily_history, synthetic_market
from mltrade.strategies.ncp import NCPStrategy


def test_constant_output_names_the_constant_direction():
    assert constant_output(np.array([1, 1, 1]), np.array([0.6, 0.7, 0.9])) == "long"
    assert constant_output(np.array([-1, -1]), np.array([0.1, 0.4])) == "short"
    assert constant_output(np.array([0, 0]), np.array([0.45, 0.55])) == "none"
    assert constant_output(directions(np.full(4, 0.5)), np.full(4, 0.5)) == "constant probability"
    assert constant_output(np.array([1, -1, 1]), np.array([0.6, 0.4, 0.7])) is None
    assert constant_output(np.array([]), np.array([])) is None
    assert describe_constant("short", "the holdout") == "always short on the holdout"
    assert describe_constant("none", "x") == "never trades on x" and describe_constant(None, "x") == ""


def _metrics(**flags):
    perf = {"log_product": 0.0, "sharpe": 0.0, "trades": 3, "hit_rate": 0.5, "direction_accuracy": 0.5}
    return {"holdout": ["2017-02-01", "2017-02-10"], "train": [], "val": [], "objective": "product",
            "model": perf, "model_adapted": perf, "baselines": {"always_long": perf}, **flags}


@pytest.fixture(scope="module")
def setup():
    bars = synthetic_market("2017-01-03", 25, planted=True, seed=5)
    hist = synthetic_daily_history(bars, 260, seed=6)
    inp = build_inputs(bars, n_candles=17, daily_history=hist)
    model = build_model(NCPConfig(n_daily=inp.daily.shape[1], cell="cfc", dense_units=(8,), ltc_units=6,
                                  ltc_units2=5, seed=3), inp.daily, inp.seq)
    cfg = load_config()
    cfg["backtest"]["baselines"] = False
    return bars, hist, model, cfg


def _card(setup, metrics):
    bars, hist, model, cfg = setup
    meta = {"settings": {"n_candles": 17, "seq_distance": 0.04, "threshold": 0.5, "objective": "product"},
            "adaptation": ATRAdaptation.identity().to_dict(), "metrics": metrics, "config": {"cell": "cfc"},
            "feature_names": []}
    res = run_strategy(bars, NCPStrategy, {"model": model, "meta": meta, "daily_history": hist}, cfg)
    return dict(res.strategy.report_sections())["NCP model"]


def test_report_flags_a_model_constant_on_its_holdout(setup):
    card = _card(setup, _metrics(holdout_constant=True, holdout_direction="short"))
    assert "constant on the holdout (always short on every holdout session)" in card
    plain = _card(setup, _metrics(holdout_constant=False, holdout_direction=""))
    assert "constant on the holdout" not in plain and "Degenerate" not in plain
    adapted = _card(setup, _metrics(holdout_constant_adapted=True, holdout_direction_adapted="none"))
    assert "With the ATR adaptation the model is constant on the holdout (never trades" in adapted
    degenerate = _card(setup, _metrics(degenerate=True,
                                       degenerate_reason="always long on the validation folds"))
    assert "Degenerate model: always long on the validation folds" in degenerate


def test_cli_text_says_degenerate_and_holdout_constant():
    text = format_metrics(_metrics(holdout_constant=True, holdout_direction="long", degenerate=True,
                                   degenerate_reason="always long on its 60 early-stopping validation "
                                                     "sessions",
                                   validation_objective=0.1, validation_folds=[0.1],
                                   selection_range=["a", "b"],
                                   significance={"words": "not distinguishable from always_long at 5%"}))
    assert "holdout significance: not distinguishable from always_long at 5%" in text
    assert "DEGENERATE model: always long on its 60" in text
    assert "constant on the holdout: always long on every holdout session" in text
    assert "validation folds a .. b (selection)" in text
