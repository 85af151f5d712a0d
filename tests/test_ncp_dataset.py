"""NCP dataset: inputs use nothing after the decision bar; labels follow the certificate payoff."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mltrade import products as P
from mltrade.calendars import tag_bars
from mltrade.models.ncp.dataset import (PayoffSpec, build_dataset, build_inputs, session_matrix,
                                        trade_outcomes)
from mltrade.models.ncp.synthetic import synthetic_daily_history, synthetic_market

N = 17


@pytest.fixture(scope="module")
def bars():
    return synthetic_market("2016-01-01", 40, planted=False, seed=3)


@pytest.fixture(scope="module")
def hist(bars):
    return synthetic_daily_history(bars, 260, seed=4)


def test_one_sample_per_session_with_expected_shapes(bars, hist):
    ds = build_dataset(bars, n_candles=N, daily_history=hist)
    tags = tag_bars(bars.index, "XNAS", 5)
    n_sessions = len(np.unique(tags.session))
    assert len(ds) == n_sessions  # the daily history covers the indicators' warm-up
    assert len(build_inputs(bars, n_candles=N)) == 0  # without it, 40 sessions are all warm-up
    assert len(np.unique(ds.dates)) == len(ds)
    assert ds.seq.shape == (len(ds), N, 6) and ds.daily.shape[0] == len(ds)
    assert np.isfinite(ds.daily).all() and np.isfinite(ds.seq).all()
    assert set(np.unique(ds.label)) <= {0.0, 1.0}
    np.testing.assert_array_equal(ds.label, (ds.long_return > 0).astype("float32"))


@pytest.mark.parametrize("k", [-1, -5, -20])
def test_truncate_and_compare_inputs_use_nothing_after_decision_bar(bars, hist, k):
    full = build_inputs(bars, n_candles=N, daily_history=hist)
    day = full.dates[k]
    tags = tag_bars(bars.index, "XNAS", 5)
    pos = np.flatnonzero((tags.session == day) & (tags.bar == N - 1))[0]
    cut = bars.iloc[:pos + 1]          # everything up to and including the decision bar
    trunc = build_inputs(cut, n_candles=N, daily_history=hist)
    assert trunc.dates[-1] == day
    np.testing.assert_array_equal(trunc.daily[-1], full.daily[k])
    np.testing.assert_array_equal(trunc.seq[-1], full.seq[k])
    assert trunc.atr[-1] == full.atr[k] and trunc.price[-1] == full.price[k]
    # and scrambling every later bar changes nothing for that session
    later = bars.copy()
    later.iloc[pos + 1:, :4] *= 1.5
    np.testing.assert_array_equal(build_inputs(later, n_candles=N, daily_history=hist).daily[k], full.daily[k])


def test_sequence_is_certificate_change_against_the_open(bars, hist):
    ds = build_inputs(bars, n_candles=N, distance=0.04, daily_history=hist)
    dates, o, h, lo, c, _ = session_matrix(bars)
    i = np.searchsorted(dates, ds.dates[3])
    kl = o[i, 0] * 0.96
    ks = o[i, 0] * 1.04
    exp_long_close = P.fair_value(1, c[i, :N], kl, 1.0) / P.fair_value(1, o[i, 0], kl, 1.0) - 1
    exp_short_low = P.fair_value(-1, lo[i, :N], ks, 1.0) / P.fair_value(-1, o[i, 0], ks, 1.0) - 1
    np.testing.assert_allclose(ds.seq[3, :, 2], exp_long_close, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ds.seq[3, :, 4], exp_short_low, rtol=1e-5, atol=1e-6)


def _one_session(path):
    """(open, high, low, close) arrays shaped (1, n) from a list of bars."""
    a = np.array(path, float).T[:, None, :]
    return a[0], a[1], a[2], a[3], np.array([len(path)])


SPEC = PayoffSpec(distance=0.04, stop=0.71, ratio=1.0, spread=0.01)


def _px(d, s, k, bid=False):
    f = P.bid_price if bid else P.ask_price
    return float(f(d, s, k, SPEC.ratio, SPEC.fx, SPEC.spread))


def test_payoff_session_end_exit_at_bid_of_last_close():
    o, h, lo, c, n = _one_session([(100, 101, 99, 100), (100, 101, 99.5, 100.5), (100.5, 102, 100, 101.5)])
    r, why, entry = trade_outcomes(o, h, lo, c, n, 1, P.LONG, SPEC)
    k = 100 * 0.96
    assert why[0] == "session_end"
    assert entry[0] == pytest.approx(_px(1, 100.0, k))
    assert r[0] == pytest.approx(_px(1, 101.5, k, bid=True) / _px(1, 100.0, k) - 1)


def test_payoff_stop_at_stop_price_and_gap_through_stop_at_open_bid():
    k = 100 * 0.96
    entry = _px(1, 100.0, k)
    stop_und = float(P.underlying_for_bid(1, 0.71 * entry, k, SPEC.ratio, SPEC.fx, SPEC.spread))
    # the low of bar 2 crosses the stop level from above
    o, h, lo, c, n = _one_session([(100, 100, 100, 100), (100, 100.2, 99.9, 100),
                                   (100, 100.1, stop_und - 0.1, 99.5), (99.5, 103, 99.5, 103)])
    r, why, _ = trade_outcomes(o, h, lo, c, n, 1, P.LONG, SPEC)
    assert why[0] == "stop" and r[0] == pytest.approx(0.71 - 1)
    # a gap opens below the stop level (above the barrier): filled at that open's bid
    gap = stop_und - 0.5
    o, h, lo, c, n = _one_session([(100, 100, 100, 100), (100, 100.2, 99.9, 100), (gap, gap, gap - 0.1, gap)])
    r, why, _ = trade_outcomes(o, h, lo, c, n, 1, P.LONG, SPEC)
    assert why[0] == "stop" and r[0] == pytest.approx(_px(1, gap, k, bid=True) / entry - 1)


def test_payoff_knockout_short_and_no_stop():
    spec = PayoffSpec(distance=0.04, stop=0.0, ratio=0.01, spread=0.01)
    o, h, lo, c, n = _one_session([(100, 100, 100, 100), (100, 100.5, 99.5, 100), (101, 104.5, 100, 101)])
    r, why, _ = trade_outcomes(o, h, lo, c, n, 1, P.SHORT, spec)
    assert why[0] == "knockout" and r[0] == pytest.approx(-1.0)


def test_bad_bars_are_rejected_with_a_clear_message(bars, hist):
    with pytest.raises(ValueError, match="timezone-aware"):
        build_inputs(bars.tz_localize(None), n_candles=N)
    with pytest.raises(ValueError, match="missing columns.*low"):
        build_inputs(bars.drop(columns=["low"]), n_candles=N)
    with pytest.raises(ValueError, match="stop"):
        PayoffSpec(stop=1.5)
    with pytest.raises(ValueError, match="n_candles"):
        build_inputs(bars, n_candles=0)
    with pytest.raises(ValueError, match="daily_history: missing columns"):
        build_inputs(bars, n_candles=N, daily_history=hist.drop(columns=["high"]))


def test_daily_history_after_the_first_session_is_ignored(bars, hist):
    base = build_inputs(bars, n_candles=N, daily_history=hist)
    overlap = pd.concat([hist, pd.DataFrame({"open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1.0},
                                            index=pd.DatetimeIndex(base.dates.astype("datetime64[ns]")))])
    np.testing.assert_array_equal(build_inputs(bars, n_candles=N, daily_history=overlap).daily, base.daily)


def test_sessions_shorter_than_the_decision_are_skipped(bars, hist):
    tags = tag_bars(bars.index, "XNAS", 5)
    last = np.unique(tags.session)[-1]
    keep = ~((tags.session == last) & (tags.bar >= N - 1))
    ds = build_inputs(bars[keep], n_candles=N, daily_history=hist)
    assert last not in set(ds.dates)
    assert isinstance(pd.Timestamp(ds.dates[-1]), pd.Timestamp)


def test_local_fallback_pipeline_is_causal_too(bars, hist, monkeypatch):
    import mltrade.models.ncp.dataset as D
    monkeypatch.setattr(D, "feature_source", lambda: "local")
    full = build_inputs(bars, n_candles=N, daily_history=hist)
    assert len(full) == len(np.unique(tag_bars(bars.index, "XNAS", 5).session))
    tags = tag_bars(bars.index, "XNAS", 5)
    day = full.dates[-3]
    pos = np.flatnonzero((tags.session == day) & (tags.bar == N - 1))[0]
    trunc = build_inputs(bars.iloc[:pos + 1], n_candles=N, daily_history=hist)
    assert trunc.dates[-1] == day
    np.testing.assert_array_equal(trunc.daily[-1], full.daily[-3])
    np.testing.assert_array_equal(trunc.seq[-1], full.seq[-3])
