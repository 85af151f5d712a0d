"""Embedded sample data, session tagging, the backtrader feed and the CSV loader."""
from __future__ import annotations

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from mltrade.calendars import calendar_for_symbol, tag_bars
from mltrade.feeds import DataFileError, IndexData, load_csv, load_daily, write_csv
from mltrade.feeds.sample import GENERATOR_VERSION, cached_intraday, generate_intraday, sample_intraday


@pytest.fixture(scope="module")
def daily():
    return load_daily("2018-11-01", "2018-12-31")


def test_daily_sample_is_the_real_nasdaq_series():
    d = load_daily()
    assert len(d) == 5031 and str(d.index[0].date()) == "1999-01-04" and str(d.index[-1].date()) == "2018-12-31"
    assert (d["high"] >= d[["open", "close"]].max(axis=1)).all()


def test_intraday_is_consistent_with_each_real_day(daily):
    bars = generate_intraday(daily, seed=3)
    g = bars.groupby(bars.index.date)
    agg = pd.DataFrame({"open": g["open"].first(), "high": g["high"].max(), "low": g["low"].min(),
                        "close": g["close"].last(), "n": g.size()})
    ref = daily.set_index(daily.index.date)
    for c in ("open", "high", "low", "close"):   # exactly, not approximately
        np.testing.assert_array_equal(agg[c].to_numpy(), ref.loc[agg.index, c].to_numpy())
    assert (bars["high"] >= bars[["open", "close"]].max(axis=1)).all()
    assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all()
    assert agg["n"].max() == 78
    # early closes from the exchange calendar: the day after Thanksgiving and Christmas Eve 2018
    assert agg.loc[pd.Timestamp("2018-11-23").date(), "n"] == 42
    assert agg.loc[pd.Timestamp("2018-12-24").date(), "n"] == 42
    assert str(bars.index[0]) == "2018-11-01 09:30:00-04:00" and str(bars.index.tz) == "America/New_York"
    assert bars.attrs["synthetic_intraday"] is True


def test_intraday_is_deterministic_by_seed(daily):
    a, b, c = generate_intraday(daily, seed=1), generate_intraday(daily, seed=1), generate_intraday(daily, seed=2)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["close"].to_numpy(), c["close"].to_numpy())


def test_whole_sample_matches_every_real_day_exactly():
    full, daily = sample_intraday(), load_daily()
    g = full.groupby(full.index.date)
    agg = pd.DataFrame({"open": g["open"].first(), "high": g["high"].max(), "low": g["low"].min(),
                        "close": g["close"].last()})
    ref = daily.set_index(daily.index.date).loc[agg.index]
    assert len(agg) == len(daily)
    for c in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(agg[c].to_numpy(), ref[c].to_numpy())
    assert (full["high"] >= full[["open", "close"]].max(axis=1)).all()
    assert (full["low"] <= full[["open", "close"]].min(axis=1)).all()
    assert full.attrs["generator_version"] == GENERATOR_VERSION


def test_generator_rejects_invalid_daily_rows(daily):
    bad = daily.copy()
    bad.loc[bad.index[3], "high"] = bad["low"].iloc[3] - 1.0
    with pytest.raises(ValueError, match=str(bad.index[3].date())):
        generate_intraday(bad)
    with pytest.raises(ValueError, match="missing column"):
        generate_intraday(daily.drop(columns=["low"]))


def test_sample_cache_round_trip_keyed_and_atomic(daily, tmp_path):
    part = daily.iloc[:15]
    fresh = generate_intraday(part, seed=4)
    first = cached_intraday(part, seed=4, folder=tmp_path)
    files = sorted(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz" and f"_v{GENERATOR_VERSION}_seed4_" in files[0].name
    pd.testing.assert_frame_equal(first, fresh)
    again = cached_intraday(part, seed=4, folder=tmp_path)   # read back from the file
    pd.testing.assert_frame_equal(again, fresh)
    assert again.attrs == fresh.attrs
    cached_intraday(part, seed=5, folder=tmp_path)          # another seed: another file
    assert len(list(tmp_path.iterdir())) == 2
    # a damaged file is regenerated and replaced, never trusted; no temporary file is left behind
    files[0].write_bytes(b"not an npz")
    pd.testing.assert_frame_equal(cached_intraday(part, seed=4, folder=tmp_path), fresh)
    with np.load(files[0]) as z:
        assert z["vals"].shape == (len(fresh), 5)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_volume_is_u_shaped(daily):
    bars = generate_intraday(daily, seed=5)
    full = bars[bars.groupby(bars.index.date)["open"].transform("size") == 78]
    pos = full.groupby(full.index.date).cumcount()
    by_bar = full["volume"].groupby(pos.to_numpy()).mean()
    assert by_bar.iloc[:5].mean() > 1.5 * by_bar.iloc[35:43].mean()
    assert by_bar.iloc[-5:].mean() > 1.5 * by_bar.iloc[35:43].mean()


def test_sample_slice_equals_full_generation():
    a = sample_intraday("2018-12-03", "2018-12-04")
    full = sample_intraday()
    pd.testing.assert_frame_equal(a, full.loc[a.index[0]:a.index[-1]])


def test_session_tags_count_bars_and_bars_left():
    bars = sample_intraday("2018-11-21", "2018-11-23")
    tags = tag_bars(bars.index, "XNAS", 5)
    first_day = tags.session == np.datetime64("2018-11-21")
    assert tags.bar[first_day][0] == 0 and tags.left[first_day][-1] == 0 and tags.left[first_day][0] == 77
    early = tags.session == np.datetime64("2018-11-23")
    assert tags.left[early][0] == 41
    assert calendar_for_symbol("NDX") == "XNAS" and calendar_for_symbol("GDAXI") == "XETR"
    with pytest.raises(ValueError, match="symbol"):
        calendar_for_symbol("FOO")


def test_index_feed_is_timezone_aware_and_carries_session_lines():
    bars = sample_intraday("2018-07-02", "2018-07-03")   # DST: New York is UTC-4

    class Rec(bt.Strategy):
        def __init__(self):
            self.rows = []

        def next(self):
            self.rows.append((self.data.datetime.datetime(0), int(self.data.session_bar[0]),
                              int(self.data.session_left[0]), self.data.close[0]))

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(IndexData(dataframe=bars))
    cerebro.addstrategy(Rec)
    rows = cerebro.run()[0].rows
    assert len(rows) == len(bars)
    assert str(rows[0][0]) == "2018-07-02 09:30:00" and rows[0][1:3] == (0, 77)
    # 2018-07-03 closes early at 13:00
    last = [r for r in rows if r[0].date().isoformat() == "2018-07-03"][-1]
    assert str(last[0]) == "2018-07-03 12:55:00" and last[2] == 0
    assert rows[-1][3] == pytest.approx(bars["close"].iloc[-1])


def _write(tmp_path, text, name="bars.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


HEADER = "datetime,open,high,low,close,volume\n"


def test_csv_round_trip(tmp_path):
    bars = sample_intraday("2018-12-03", "2018-12-03")
    path = tmp_path / "x.csv"
    write_csv(bars, path)
    back = load_csv(path)
    np.testing.assert_allclose(back["close"].to_numpy(), bars["close"].to_numpy(), rtol=1e-9)
    assert (back.index == bars.index).all()


@pytest.mark.parametrize("body, line, problem", [
    ("2019-01-02T09:30:00-05:00,1,2,0.5,1.5,10\n2019-01-02T09:30:00-05:00,1,2,0.5,1.5,10\n", 3, "duplicate"),
    ("2019-01-02T09:35:00-05:00,1,2,0.5,1.5,10\n2019-01-02T09:30:00-05:00,1,2,0.5,1.5,10\n", 3, "not sorted"),
    ("2019-01-02T09:30:00-05:00,1,2,0.5,,10\n", 2, "column 'close': expected a number"),
    ("2019-01-02T09:30:00-05:00,1,2,0.5,nan,10\n", 2, "column 'close'"),
    ("2019-01-02T09:30:00-05:00,1,0.5,2,1,10\n", 2, "below low"),
    ("2019-01-02T09:30:00-05:00,1,2,0.5,1.5,10\n2019-01-02T09:35:00-05:00,0,2,-1,1.5,10\n", 3, "positive"),
    ("2019-01-02T09:30:00,1,2,0.5,1.5,10\n", 2, "no timezone"),
    ("yesterday,1,2,0.5,1.5,10\n", 2, "cannot parse timestamp"),
])
def test_csv_errors_name_file_line_and_problem(tmp_path, body, line, problem):
    path = _write(tmp_path, HEADER + body)
    with pytest.raises(DataFileError) as err:
        load_csv(path)
    msg = str(err.value)
    assert f"{path}:{line}" in msg and problem in msg


def test_csv_missing_columns(tmp_path):
    path = _write(tmp_path, "datetime,open,high,close\n2019-01-02T09:30:00-05:00,1,2,1.5\n")
    with pytest.raises(DataFileError, match=r"bars.csv:1: missing column\(s\) \['low'\]"):
        load_csv(path)


def test_csv_naive_timestamps_accepted_with_tz(tmp_path):
    path = _write(tmp_path, HEADER + "2019-01-02 09:30:00,1,2,0.5,1.5,10\n")
    df = load_csv(path, tz="America/New_York")
    assert str(df.index[0]) == "2019-01-02 09:30:00-05:00"
