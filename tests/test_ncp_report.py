"""NCPStrategy report figures; the daily warm-up history of CSV data (real backtests, tiny trained model)."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from mltrade.backtest import run_backtest, run_strategy
from mltrade.config import load_config
from mltrade.feeds.loader import load_csv, write_csv
from mltrade.models.ncp.adapt import ATRAdaptation
from mltrade.models.ncp.artifact import write_artifact
from mltrade.models.ncp.data import dataset_for
from mltrade.models.ncp.dataset import PayoffSpec, build_dataset
from mltrade.models.ncp.history import load_daily_history
from mltrade.models.ncp.model import NCPConfig, build_model
from mltrade.models.ncp.settings import NCPSettings
from mltrade.models.ncp.synthetic import synthetic_daily_history, synthetic_market
from mltrade.pbo import pbo_or_reason
from mltrade.strategies.ncp import NCPStrategy

N = 17
TITLES = ("NCP probability per session", "NCP calibration", "NCP out-of-sample cumulative log-return")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("ncp_report")
    bars = synthetic_market("2017-01-03", 24, planted=True, seed=11)
    hist = synthetic_daily_history(bars, 260, seed=12)
    write_csv(bars, root / "bars.csv")
    write_csv(hist, root / "daily.csv")  # dates without a UTC offset, as daily files usually come
    ds = build_dataset(bars, N, PayoffSpec(), daily_history=hist)
    model = build_model(NCPConfig(n_daily=ds.daily.shape[1], cell="cfc", dense_units=(8,), ltc_units=6,
                                  ltc_units2=5, seed=4), ds.daily, ds.seq)
    before = model.get_weights()
    model.fit({"daily": ds.daily, "candles": ds.seq}, ds.label, epochs=2, batch_size=8, verbose=0)
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))  # trained
    hold = [str(ds.dates[-8]), str(ds.dates[-1])]
    meta = {"settings": {"n_candles": N, "seq_distance": 0.04, "threshold": 0.5, "objective": "product"},
            "adaptation": ATRAdaptation.identity().to_dict(),
            "metrics": {"holdout": hold, "train": [str(ds.dates[0]), str(ds.dates[-9])],
                        "pbo": pbo_or_reason(list(np.random.default_rng(5).standard_normal((3, 40))))},
            "config": {"cell": "cfc"}, "feature_names": list(ds.feature_names)}
    write_artifact(model, meta, str(root / "v1"))
    meta_h = dict(meta, settings=dict(meta["settings"], daily_history=str(root / "daily.csv")))
    write_artifact(model, meta_h, str(root / "v_hist"))
    return root, bars, hist, ds, meta


def _cfg(root, **params):
    cfg = load_config()
    cfg["backtest"].update(data=str(root / "bars.csv"), start="", end="", out=str(root / "reports"),
                           baselines=False)
    cfg["strategy"]["name"] = "ncp"
    cfg["strategy"]["params"] = {"model_path": str(root / "v1"), "stake_fraction": 0.25, **params}
    return cfg


def _first_session(bars):
    return str(bars.index[0].date())


def test_csv_backtest_with_daily_history_decides_from_the_first_session_and_without_it_does_not(world):
    root, bars, *_ = world
    with_hist = run_backtest(_cfg(root, daily_history=str(root / "daily.csv")), report=False)
    days = sorted({t[:10] for t in pd.DataFrame(with_hist.strategy.decisions)["time"]})
    sessions = sorted({str(d) for d in bars.index.date})
    assert days == sessions and days[0] == _first_session(bars)
    assert len(with_hist.trades) == len(days)
    without = run_backtest(_cfg(root), report=False)  # "auto" on CSV data, model trained without one
    assert without.strategy.decisions == [] and len(without.trades) == 0
    # "auto" picks up the [ncp] daily_history the model was trained with
    auto = run_backtest(_cfg(root, model_path=str(root / "v_hist")), report=False)
    pd.testing.assert_frame_equal(pd.DataFrame(auto.strategy.decisions),
                                  pd.DataFrame(with_hist.strategy.decisions))


def test_daily_history_as_dataframe_equals_the_csv_path(world):
    root, _, hist, *_ = world
    cfg = _cfg(root)
    csv_bars = load_csv(root / "bars.csv")
    a = run_strategy(csv_bars, NCPStrategy, {"model_path": str(root / "v1"), "daily_history": hist}, cfg)
    b = run_strategy(csv_bars, NCPStrategy, {"model_path": str(root / "v1"),
                                             "daily_history": str(root / "daily.csv")}, cfg)
    assert len(a.strategy.decisions) > 0
    pd.testing.assert_frame_equal(pd.DataFrame(a.strategy.decisions), pd.DataFrame(b.strategy.decisions))
    with pytest.raises(ValueError, match="daily_history: .*missing.csv: no such file"):
        run_strategy(csv_bars, NCPStrategy, {"model_path": str(root / "v1"),
                                             "daily_history": str(root / "missing.csv")}, cfg)
    with pytest.raises(ValueError, match="daily_history: expected"):
        run_strategy(csv_bars, NCPStrategy, {"model_path": str(root / "v1"), "daily_history": 3}, cfg)


def test_ncp_config_key_daily_history_is_validated_and_feeds_the_training_warm_up(world):
    root, bars, *_ = world
    assert load_config()["ncp"]["daily_history"] == ""
    with pytest.raises(ValueError, match=r"ncp\.daily_history: .*nope\.csv"):
        NCPSettings(daily_history=str(root / "nope.csv"))
    with pytest.raises(ValueError, match=r"ncp\.daily_history: .*one row per date"):
        load_daily_history(str(root / "bars.csv"), "ncp.daily_history")
    cfg = load_config(overrides={"ncp": {"data": str(root / "bars.csv"), "start": "", "end": "",
                                         "daily_history": str(root / "daily.csv")}})
    s = NCPSettings.from_config(cfg)
    with_hist = dataset_for(s)
    without = dataset_for(NCPSettings.from_config(load_config(overrides={"ncp": {
        "data": str(root / "bars.csv"), "start": "", "end": ""}})))
    assert str(with_hist.dates[0]) == _first_session(bars) and len(without) == 0


def test_backtest_report_has_the_ncp_figures(world):
    root, *_, meta = world
    res = run_backtest(_cfg(root, daily_history=str(root / "daily.csv")), run_name="figs")
    page = (res.run_dir / "report.html").read_text()
    alts = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,', page)
    assert all(a.startswith("In-sample: ") for a in alts)   # the range starts inside the training data
    ncp = [a.removeprefix("In-sample: ") for a in alts if a.startswith("In-sample: NCP ")]
    assert len(ncp) == 3 and all(any(a.startswith(t) for a in ncp) for t in TITLES)
    assert f"holdout {meta['metrics']['holdout'][0]} .. {meta['metrics']['holdout'][1]}" in " ".join(ncp)
    # the search's PBO from ncp.json, in words
    assert "NCP search: probability of backtest overfitting" in page
    assert f"below the median out of sample: {meta['metrics']['pbo']['pbo']:.2f}" in page


def test_figure_data_are_the_sessions_outcomes(world):
    root, _, hist, ds, meta = world
    res = run_strategy(load_csv(root / "bars.csv"), NCPStrategy,
                       {"model_path": str(root / "v1"), "daily_history": hist, "spread": 0.01}, _cfg(root))
    figs = dict(res.strategy.report_figures())
    assert len(figs) == 3
    dec = pd.DataFrame(res.strategy.decisions)
    dates = pd.to_datetime(dec["time"]).dt.date
    pos = pd.Index(pd.to_datetime(ds.dates).date).get_indexer(dates)
    # probability figure: one point per decision, at the decision's probability
    prob = next(f for t, f in figs.items() if t.startswith(TITLES[0])).axes[0]
    np.testing.assert_allclose(prob.lines[0].get_ydata(), dec["info_p_long"])
    # calibration: the bins' session-weighted share is the share of winning long certificates
    cal_title, cal = next((t, f) for t, f in figs.items() if t.startswith(TITLES[1]))
    traded = (dec["direction"] != 0).to_numpy()
    assert f"{int(traded.sum())} traded sessions" in cal_title
    line = cal.axes[0].lines[1]
    counts = [int(t.get_text()) for t in cal.axes[0].texts]
    assert sum(counts) == traded.sum()
    share = np.dot(line.get_ydata(), counts) / sum(counts)
    assert share == pytest.approx((ds.long_return[pos[traded]] > 0).mean())
    # out-of-sample: the strategy's curve ends at the log product of its trades' ratios in the holdout
    oos = next(f for t, f in figs.items() if t.startswith(TITLES[2])).axes[0]
    labels = [ln.get_label() for ln in oos.lines]
    names = {"NCP strategy", "buy-and-hold (index)", "always long", "random direction (mean of 200)"}
    assert names <= set(labels)
    tr = res.trades
    in_hold = pd.to_datetime(tr["entry_time"]).dt.strftime("%Y-%m-%d") >= meta["metrics"]["holdout"][0]
    assert in_hold.sum() == 8
    expected = np.log(tr["exit_price"][in_hold] / tr["entry_price"][in_hold]).sum()
    strat = oos.lines[labels.index("NCP strategy")].get_ydata()
    assert len(strat) == 8 and strat[-1] == pytest.approx(expected, rel=1e-6, abs=1e-9)
    always_long = oos.lines[labels.index("always long")].get_ydata()
    assert always_long[-1] == pytest.approx(np.log1p(ds.long_return[-8:]).sum())
