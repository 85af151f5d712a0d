"""The baselines package: one place for every baseline, the daily ones annualised as the rest of the project."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mltrade.annualise import sharpe
from mltrade.baselines.daily import buy_and_hold


@pytest.fixture
def daily():
    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.normal(0.0005, 0.01, 300)))
    opens = np.r_[100.0, close[:-1]]
    idx = pd.bdate_range("2019-01-02", periods=300)
    return pd.DataFrame({"open": opens, "high": np.maximum(opens, close) * 1.002,
                         "low": np.minimum(opens, close) * 0.998, "close": close}, index=idx)


def test_buy_and_hold_sharpe_is_the_projects_at_the_calendars_sessions_per_year(daily):
    eq = np.r_[daily["open"].iloc[0], daily["close"].to_numpy()]
    r = np.diff(eq) / eq[:-1]                       # one return a session: the first from the open
    assert buy_and_hold(daily)["sharpe"] == sharpe(r, 252)          # the default: 252 sessions a year
    xetr = buy_and_hold(daily, periods_per_year=250.0)["sharpe"]
    assert xetr == pytest.approx(sharpe(r, 250.0)) and xetr != buy_and_hold(daily)["sharpe"]
    flat = daily.assign(open=100.0, close=100.0)
    assert math.isnan(buy_and_hold(flat)["sharpe"])                  # no variation: no figure


def test_the_old_places_are_faces_of_the_package():
    import mltrade.models.baselines as old
    from mltrade import report
    from mltrade.baselines import daily as d, names, simulation as s

    assert old.TradeCosts is s.TradeCosts and old.buy_and_hold is d.buy_and_hold
    assert report.baseline_label is names.baseline_label
    assert names.baseline_label("always_long") == "always-long"
