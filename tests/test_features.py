"""Feature pipeline: stable 176 columns, documented, no look-ahead, correct values."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ta.momentum import RSIIndicator

from mltrade.feeds.sample import generate_intraday, load_daily
from mltrade.models import features as F
from mltrade.products import fair_value


@pytest.fixture(scope="module")
def daily():
    return load_daily("2016-01-01", "2017-12-31")


@pytest.fixture(scope="module")
def bars(daily):
    return generate_intraday(daily.loc["2017-03-01":"2017-05-31"], seed=7)


def test_columns_are_stable_and_documented(bars, daily):
    assert len(F.FEATURE_COLUMNS) == 176 and len(set(F.FEATURE_COLUMNS)) == 176
    table = F.feature_table()
    assert list(table["name"][:176]) == F.FEATURE_COLUMNS
    assert set(table["name"][176:]) == {f"ltc_{v}" for v in F.LTC_VALUES}
    assert (table[["family", "formula", "lag"]].apply(lambda s: s.str.len() > 0)).all().all()
    for per in ("session", "bar"):
        X = F.build_features(bars, daily, per=per)
        assert list(X.columns) == F.FEATURE_COLUMNS
    X = F.build_features(bars, daily)
    assert X.index.is_unique and X.index.tz is None
    assert len(X) == len(np.unique(bars.index.tz_convert("America/New_York").date))
    # with a year of daily history before the bars, only the longest windows are still warming up
    assert X.iloc[-1].notna().all()


def _cuts(bars, n=10, seed=0):
    rng = np.random.default_rng(seed)
    cuts = set(rng.integers(200, len(bars) - 1, n).tolist())
    cuts |= {len(bars) // 2, 78 * 20 + 16, 78 * 20 + 17, 78 * 30}  # session starts and decision bars
    return sorted(cuts)


@pytest.mark.parametrize("with_daily", [False, True])
def test_no_lookahead_truncated_history_gives_same_rows(bars, daily, with_daily):
    full_bar = F.build_features(bars, daily if with_daily else None, per="bar")
    full_ses = F.build_features(bars, daily if with_daily else None)
    for cut in _cuts(bars):
        part = bars.iloc[:cut]
        # the daily table may even contain the whole current session (its close is the future)
        d = daily.loc[:part.index[-1].tz_localize(None).normalize()] if with_daily else None
        got = F.build_features(part, d, per="bar")
        pd.testing.assert_frame_equal(got, full_bar.loc[got.index], check_exact=False, rtol=1e-10, atol=1e-12)
        assert len(got) == cut
        gs = F.build_features(part, d)
        pd.testing.assert_frame_equal(gs, full_ses.loc[gs.index], check_exact=False, rtol=1e-10, atol=1e-12)


def test_no_lookahead_future_perturbation(bars, daily):
    cut = 78 * 25 + 16
    noisy = bars.copy()
    rng = np.random.default_rng(1)
    noisy.iloc[cut + 1:, :4] *= rng.uniform(0.9, 1.1, (len(bars) - cut - 1, 1))
    noisy["high"] = noisy[["open", "high", "low", "close"]].max(axis=1)
    noisy["low"] = noisy[["open", "high", "low", "close"]].min(axis=1)
    a = F.build_features(bars, per="bar").iloc[:cut + 1]
    b = F.build_features(noisy, per="bar").iloc[:cut + 1]
    pd.testing.assert_frame_equal(a, b)
    assert not F.build_features(bars, per="bar").iloc[cut + 1:].equals(F.build_features(noisy, per="bar")
                                                                      .iloc[cut + 1:])


def test_running_daily_candle_equals_naive_rescan(bars):
    sub = bars.iloc[: 78 * 3 + 10]
    run = F.running_daily_candle(sub)
    local = sub.index.tz_convert("America/New_York")
    for i, ts in enumerate(sub.index):
        same = (local.date == local[i].date()) & (sub.index <= ts)
        s = sub[same]
        row = run.loc[ts]
        assert row["run_open"] == s["open"].iloc[0]
        assert row["run_high"] == s["high"].max() and row["run_low"] == s["low"].min()
        assert row["run_close"] == s["close"].iloc[-1]
    assert list(run["bar"][:3]) == [0, 1, 2]


def test_session_daily_reproduces_the_real_daily_bars(bars, daily):
    agg = F.session_daily(bars)
    ref = daily.loc[agg.index]
    np.testing.assert_allclose(agg[["open", "high", "low", "close"]], ref[["open", "high", "low", "close"]],
                               rtol=1e-12)


def test_daily_features_are_lagged_values(daily):
    feat = F.daily_features(daily)
    c = daily["close"]
    t = 40
    want = c.iloc[t - 1] / c.iloc[t - 10:t].mean() - 1
    assert feat["d_close_sma10"].iloc[t] == pytest.approx(want, rel=1e-12)
    rsi = RSIIndicator(c, 14).rsi() / 100
    assert feat["d_rsi14"].iloc[t] == pytest.approx(rsi.iloc[t - 1], rel=1e-12)
    assert feat["d_rsi14_chg"].iloc[t] == pytest.approx(rsi.iloc[t - 1] - rsi.iloc[t - 2], rel=1e-9)
    assert feat["d_gap"].iloc[t] == pytest.approx(daily["open"].iloc[t - 1] / c.iloc[t - 2] - 1)
    assert feat.iloc[0, :71].isna().all()  # nothing known before the first session
    # a date without its own daily row (a holiday) takes the last row before it
    hol = F.daily_features(daily, pd.DatetimeIndex(["2017-07-04"]))
    assert hol["d_close_chg1"].iloc[0] == pytest.approx(c.loc["2017-07-03"] / c.loc["2017-06-30"] - 1)


def test_calendar_onehots():
    oh = F.calendar_onehots(pd.DatetimeIndex(["2018-12-31", "2017-05-17"]))
    r = oh.iloc[0]
    assert r["wd_mon"] == r["month_dec"] == r["dom_31"] == r["moq_3"] == 1
    r = oh.iloc[1]
    assert r["wd_wed"] == r["month_may"] == r["dom_17"] == r["moq_2"] == 1
    assert (oh.sum(axis=1) == 4).all()


def test_ltc_sequences_priced_with_products(bars):
    dates, X = F.ltc_sequences(bars, n_candles=17, distance=0.04)
    assert X.shape == (len(dates), 17, 6)
    s = 3
    day = bars[bars.index.tz_convert("America/New_York").normalize().tz_localize(None) == dates[s]]
    s0 = day["open"].iloc[0]
    k_long, k_short = s0 * 0.96, s0 * 1.04
    i = 5
    exp_long_close = fair_value(1, day["close"].iloc[i], k_long, 0.01) / fair_value(1, s0, k_long, 0.01) - 1
    exp_short_high = (fair_value(-1, day["high"].iloc[i], k_short, 0.01)
                      / fair_value(-1, s0, k_short, 0.01) - 1)
    assert X[s, i, 2] == pytest.approx(exp_long_close)
    assert X[s, i, 3] == pytest.approx(exp_short_high)
    assert (X[..., 0] >= X[..., 2]).all() and (X[..., 2] >= X[..., 1]).all()  # long: high >= close >= low
    assert (X[..., 4] >= X[..., 5]).all() and (X[..., 5] >= X[..., 3]).all()  # short: low >= close >= high
    # same value as the decision-time intraday feature
    Xs = F.build_features(bars)
    assert np.allclose(Xs.loc[dates, "i_cert_long"], X[:, 16, 2])
    assert np.allclose(Xs.loc[dates, "i_cert_short"], X[:, 16, 5])


def test_ltc_knockout_and_incomplete_sessions(bars):
    b = bars.copy()
    first = b.index.tz_convert("America/New_York").normalize()
    d0 = first[0]
    sess0 = np.flatnonzero(first == d0)
    s0 = b["open"].iloc[sess0[0]]
    b.iloc[sess0[4], b.columns.get_loc("low")] = s0 * 0.95  # crash through the long barrier at candle 4
    drop = np.flatnonzero(first == first.unique()[1])[3]     # session 1 misses candle 3
    b = b.drop(b.index[drop])
    dates, X = F.ltc_sequences(b, n_candles=10, distance=0.04)
    assert dates[0] == d0.tz_localize(None)
    assert (X[0, 4:, :3] == -1).all() and (X[0, :4, :3] > -1).all()
    assert (X[0, :, 3:] > -1).all()  # the short certificate survives
    assert first.unique()[1].tz_localize(None) not in dates


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"missing columns \['low'\]"):
        F.build_features(pd.DataFrame({"open": [1.0], "high": [1.0], "close": [1.0]},
                                      index=pd.DatetimeIndex(["2020-01-02 09:30"], tz="America/New_York")))
    naive = pd.DataFrame({c: [1.0, 1.0] for c in ("open", "high", "low", "close")},
                         index=pd.DatetimeIndex(["2020-01-02 09:30", "2020-01-02 09:35"]))
    with pytest.raises(ValueError, match="timezone-aware"):
        F.intraday_features(naive)
    with pytest.raises(ValueError, match="per"):
        F.build_features(naive, per="day")


def test_wilder_atr_matches_ta(daily):
    from ta.volatility import AverageTrueRange

    a = F.wilder_atr(daily["high"], daily["low"], daily["close"], 14)
    b = AverageTrueRange(daily["high"], daily["low"], daily["close"], 14).average_true_range()
    assert a.iloc[:13].isna().all()
    np.testing.assert_allclose(a.iloc[13:], b.iloc[13:], rtol=1e-12)
    assert F.wilder_atr(daily["high"][:4], daily["low"][:4], daily["close"][:4], 14).isna().all()


def test_original_daily_subset_has_a_short_warmup(daily):
    cols = F.ORIGINAL_DAILY_COLUMNS
    assert set(cols) <= set(F.DAILY_COLUMNS) and len(cols) == len(set(cols)) == 12 + 10 + 51
    feat = F.daily_features(daily.iloc[:60])[cols]
    assert feat.iloc[30:].notna().all().all()
    assert feat.iloc[5:30].isna().any(axis=1).all()  # the 30-day average still warming up
