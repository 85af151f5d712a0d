"""Cross-module checks: the pieces of the data flow fit together."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mltrade.cli import main
from mltrade.feeds import load_daily, sample_intraday


def test_backtest_on_bars_fetched_from_a_loopback_twelvedata(tmp_path, monkeypatch):
    from tests.fake_twelvedata import FakeTwelveData

    bars = sample_intraday("2018-06-04", "2018-06-08")
    monkeypatch.setenv("TWELVEDATA_API_KEY", "test-key-123")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[twelvedata]\ndata_dir = "{tmp_path / "cache"}"\ncredits_per_minute = 1000\n'
                   f'backoff_base = 0.01\n[backtest]\nstart = "2018-06-04"\nend = "2018-06-08"\n'
                   f'out = "{tmp_path}"\nbaselines = false\n')
    with FakeTwelveData(bars, symbol="NDX") as server:
        assert main(["data", "fetch", "--symbol", "NDX", "--start", "2018-06-04", "--end", "2018-06-09",
                     "--config", str(cfg), "--base-url", server.url, "--no-progress"]) == 0
    assert main(["backtest", "--config", str(cfg), "--data", "twelvedata:NDX", "--name", "td", "--quiet"]) == 0
    summary = json.loads((tmp_path / "td" / "summary.json").read_text())
    assert summary["trades"] == 5 and summary["synthetic_intraday"] is False and summary["bars"] == len(bars)
    assert main(["backtest", "--config", str(cfg), "--data", "twelvedata:GDAXI", "--quiet"]) == 2


def test_dqn_pipeline_observations_are_causal():
    from mltrade.models.dqn.observations import build_observations

    daily = load_daily("2012-01-01", "2014-12-31")
    full = build_observations(daily, "features")
    cut = daily.index[600]
    part = build_observations(daily.loc[:cut], "features")
    pd.testing.assert_frame_equal(part.loc[cut:cut], full.loc[cut:cut])
    assert np.isfinite(full.iloc[-1].to_numpy()).all()
