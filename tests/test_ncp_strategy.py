"""NCPStrategy in real backtrader runs: batch == live, timing, adaptation, barrier mapping, report."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mltrade.backtest import run_strategy
from mltrade.calendars import tag_bars
from mltrade.config import load_config
from mltrade.models.ncp.adapt import ATRAdaptation
from mltrade.models.ncp.artifact import write_artifact
from mltrade.models.ncp.dataset import build_inputs
from mltrade.models.ncp.model import NCPConfig, build_model, predict_proba
from mltrade.models.ncp.synthetic import synthetic_daily_history, synthetic_market
from mltrade.strategies.ncp import NCPStrategy, confidence_distance
from mltrade.strategies.registry import get_strategy

N = 17


@pytest.fixture(scope="module")
def setup():
    bars = synthetic_market("2017-01-03", 30, planted=True, seed=5)
    hist = synthetic_daily_history(bars, 260, seed=6)
    inp = build_inputs(bars, n_candles=N, daily_history=hist)
    model = build_model(NCPConfig(n_daily=inp.daily.shape[1], cell="cfc", dense_units=(8,), ltc_units=6,
                                  ltc_units2=5, seed=3), inp.daily, inp.seq)
    meta = {"settings": {"n_candles": N, "seq_distance": 0.04, "threshold": 0.5, "objective": "product"},
            "adaptation": ATRAdaptation.identity().to_dict(),
            "metrics": {"holdout": [str(inp.dates[-5]), str(inp.dates[-1])], "train": [], "val": [],
                        "model": {"log_product": 0.1, "sharpe": 1.0, "trades": 5, "hit_rate": 0.6,
                                  "direction_accuracy": 0.6},
                        "baselines": {"always_long": {"log_product": -0.1, "sharpe": -1.0, "trades": 5,
                                                      "hit_rate": 0.4, "direction_accuracy": 0.4}}},
            "config": {"cell": "cfc"}, "feature_names": ["x"] * inp.daily.shape[1]}
    cfg = load_config()
    cfg["backtest"]["baselines"] = False
    return bars, inp, model, meta, cfg, hist


def _run(setup, **kw):
    bars, _, model, meta, cfg, hist = setup
    kw.setdefault("meta", meta)
    kw.setdefault("daily_history", hist)
    return run_strategy(bars, NCPStrategy, dict(model=model, **kw), cfg)


def test_registered_by_name():
    assert get_strategy("ncp") is NCPStrategy


def test_without_daily_history_the_warm_up_sessions_are_not_traded(setup):
    res = _run(setup, daily_history=None)
    assert res.strategy.decisions == [] and len(res.trades) == 0


def test_batch_and_live_make_identical_decisions_and_batch_predicts_once(setup):
    bars, inp, model, *_ = setup
    batch = _run(setup, mode="batch")
    live = _run(setup, mode="live")
    db, dl = pd.DataFrame(batch.strategy.decisions), pd.DataFrame(live.strategy.decisions)
    assert len(db) == len(inp) == 30
    assert batch.strategy.predict_calls == 1 and live.strategy.predict_calls == len(db)
    pd.testing.assert_series_equal(db["time"], dl["time"])
    np.testing.assert_array_equal(db["direction"], dl["direction"])
    np.testing.assert_allclose(db["info_p_long"], dl["info_p_long"], rtol=1e-5)
    # the batch probabilities are the model's probabilities of those sessions' inputs
    np.testing.assert_allclose(db["info_p_long"], predict_proba(model, inp.daily, inp.seq), rtol=1e-5)
    expected = np.where(db["info_p_long"] >= 0.5, 1, -1)
    np.testing.assert_array_equal(db["direction"], expected)


def test_decides_at_bar_n_minus_1_enters_at_bar_n_exits_at_session_end(setup):
    bars, *_ = setup
    res = _run(setup)
    tags = tag_bars(bars.index, "XNAS", 5)
    local = bars.index.tz_localize(None)
    bar_of = dict(zip(local.strftime("%Y-%m-%dT%H:%M:%S"), tags.bar))
    dec_times = pd.to_datetime(pd.DataFrame(res.strategy.decisions)["time"]).dt.strftime("%Y-%m-%dT%H:%M:%S")
    assert {bar_of[t] for t in dec_times} == {N - 1}
    tr = res.trades
    assert len(tr) == len(dec_times)
    assert {bar_of[t] for t in tr["entry_time"]} == {N}
    assert set(tr["exit_reason"]) <= {"session_end", "stop", "knockout"}
    # one trade per session, closed the same day
    assert (pd.to_datetime(tr["entry_time"]).dt.date == pd.to_datetime(tr["exit_time"]).dt.date).all()


def test_adaptation_flip_and_skip_change_the_executed_direction(setup):
    base = pd.DataFrame(_run(setup).strategy.decisions)
    meta = setup[3]
    flipped = pd.DataFrame(_run(setup, meta=dict(meta, adaptation={"edges": [], "actions": ["flip"]}))
                           .strategy.decisions)
    np.testing.assert_array_equal(flipped["direction"], -base["direction"])
    np.testing.assert_array_equal(flipped["ml_direction"], -base["direction"])  # what was submitted
    skipped = _run(setup, meta=dict(meta, adaptation={"edges": [], "actions": ["skip"]}))
    assert len(skipped.trades) == 0
    assert (pd.DataFrame(skipped.strategy.decisions)["direction"] == 0).all()


def test_confidence_mapping_sets_the_barrier_distance(setup):
    assert confidence_distance(0.5, 0.04, [(0.0, 0.05), (0.5, 0.02)]) == 0.05
    assert confidence_distance(0.8, 0.04, [(0.0, 0.05), (0.5, 0.02)]) == 0.02
    assert confidence_distance(0.1, 0.04, None) == 0.04
    with pytest.raises(ValueError, match="confidence_distances"):
        confidence_distance(0.9, 0.04, [(0.1, 1.5)])
    res = _run(setup, confidence_distances=[(0.0, 0.03)])
    d = pd.DataFrame(res.strategy.decisions)
    dist = d["direction"] * (1 - d["barrier"] / d["price"])
    np.testing.assert_allclose(dist, 0.03, rtol=1e-9)


def test_report_sections_show_holdout_baselines_and_atr_table(setup, tmp_path):
    res = _run(setup)
    sections = dict(res.strategy.report_sections())
    titles = " | ".join(sections)
    assert "holdout" in titles and "ATR" in titles
    hold = next(v for k, v in sections.items() if "holdout" in k)
    assert "model + ATR adaptation" in hold and "always_long" not in hold  # one baseline table per report
    card = sections["NCP model"]
    assert "in-sample" in card and "before the holdout" in card  # in-sample decisions are flagged


def test_model_loaded_from_artifact_directory(setup, tmp_path):
    bars, inp, model, meta, cfg, hist = setup
    write_artifact(model, meta, str(tmp_path / "v1"))
    res = run_strategy(bars, NCPStrategy, {"model_path": str(tmp_path / "v1"), "daily_history": hist}, cfg)
    np.testing.assert_allclose(pd.DataFrame(res.strategy.decisions)["info_p_long"],
                               predict_proba(model, inp.daily, inp.seq), rtol=1e-5)
    with pytest.raises(FileNotFoundError, match="ncp.json"):
        run_strategy(bars, NCPStrategy, {"model_path": str(tmp_path / "missing")}, cfg)
