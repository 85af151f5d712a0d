"""The README's CSV round trip: ``mltrade data sample --out bars.csv``, ``mltrade backtest --data bars.csv``.

Local timestamps across a DST change carry two UTC offsets in one file; pandas 3
refuses to parse such a column in one go, so the loader must handle it itself.
"""
from __future__ import annotations

import json

import pandas as pd
import pytest

from mltrade.feeds.loader import DataFileError, load_csv, write_csv

# 2018-03-11: US clocks go forward, so the file holds -0500 and -0400 offsets
START, END = "2018-03-07", "2018-03-14"


def test_cli_round_trip_backtest_equals_the_sample_backtest_to_the_cent(tmp_path):
    from mltrade.cli import main

    csv = tmp_path / "bars.csv"
    assert main(["data", "sample", "--out", str(csv), "--start", START, "--end", END]) == 0
    text = csv.read_text()
    assert "T09:30:00-0500," in text and "T09:30:00-0400," in text
    common = ["--start", START, "--end", END, "--out", str(tmp_path), "--quiet"]
    assert main(["backtest", "--data", str(csv), "--name", "csv"] + common) == 0
    assert main(["backtest", "--data", "sample", "--name", "sample"] + common) == 0
    s_csv = json.loads((tmp_path / "csv" / "summary.json").read_text())
    s_smp = json.loads((tmp_path / "sample" / "summary.json").read_text())
    assert s_csv["trades"] == s_smp["trades"] > 0
    assert round(s_csv["final_value"], 2) == round(s_smp["final_value"], 2)
    for name in ("buy_and_hold", "always_long", "random_direction"):
        b_csv, b_smp = s_csv["baselines"][name], s_smp["baselines"][name]
        assert round(b_csv["final_value"], 2) == round(b_smp["final_value"], 2)
    t_csv = pd.read_csv(tmp_path / "csv" / "trades.csv")
    t_smp = pd.read_csv(tmp_path / "sample" / "trades.csv")
    assert list(t_csv["entry_time"]) == list(t_smp["entry_time"])
    assert list(t_csv["exit_reason"]) == list(t_smp["exit_reason"])
    assert list(t_csv["pnl"].round(2)) == list(t_smp["pnl"].round(2))
    e_csv = pd.read_csv(tmp_path / "csv" / "equity.csv")
    e_smp = pd.read_csv(tmp_path / "sample" / "equity.csv")
    assert len(e_csv) == len(e_smp) and list(e_csv["value"].round(2)) == list(e_smp["value"].round(2))


def test_write_then_load_is_exact_and_keeps_the_exchange_timezone(tmp_path):
    from mltrade.feeds.sample import sample_intraday

    bars = sample_intraday(START, END)
    write_csv(bars, tmp_path / "b.csv")
    got = load_csv(tmp_path / "b.csv")
    assert str(got.index.tz) == "America/New_York"
    assert (got.index == bars.index).all()
    pd.testing.assert_frame_equal(got[["open", "high", "low", "close", "volume"]],
                                  bars[["open", "high", "low", "close", "volume"]], check_freq=False)


def _write(path, stamps, price=100.0):
    rows = [f"{t},{price},{price + 1},{price - 1},{price},10" for t in stamps]
    path.write_text("datetime,open,high,low,close,volume\n" + "\n".join(rows) + "\n")
    return path


def test_offsets_across_dst_in_other_zones_and_formats(tmp_path):
    # Frankfurt: +01:00 in winter, +02:00 from 2024-03-31
    p = _write(tmp_path / "dax.csv", ["2024-03-28 09:00:00+01:00", "2024-03-28 09:05:00+01:00",
                                      "2024-04-02 09:00:00+02:00", "2024-04-02 09:05:00+02:00"])
    df = load_csv(p)
    assert str(df.index.tz) == "Europe/Berlin"
    assert [t.strftime("%H:%M") for t in df.index] == ["09:00", "09:05", "09:00", "09:05"]
    # an explicit tz converts whatever the offsets
    ny = load_csv(p, tz="America/New_York")
    assert ny.index[0] == pd.Timestamp("2024-03-28 08:00", tz="UTC")
    # offsets that no single zone explains: each instant is kept exactly, in UTC
    q = _write(tmp_path / "odd.csv", ["2024-01-02T09:30:00+0300", "2024-01-02T09:35:00-0700"])
    odd = load_csv(q)
    assert str(odd.index.tz) == "UTC"
    assert list(odd.index) == [pd.Timestamp("2024-01-02 06:30", tz="UTC"),
                               pd.Timestamp("2024-01-02 16:35", tz="UTC")]


@pytest.mark.parametrize("bad, line, what", [
    ("2018-03-12T09:35:00", 4, "has no UTC offset"),
    ("2018-03-12T25:35:00-0400", 4, "cannot parse timestamp"),
])
def test_bad_timestamp_among_mixed_offsets_names_its_line(tmp_path, bad, line, what):
    p = _write(tmp_path / "bad.csv", ["2018-03-09T09:30:00-0500", "2018-03-12T09:30:00-0400", bad,
                                      "2018-03-12T09:40:00-0400"])
    with pytest.raises(DataFileError, match=rf"bad.csv:{line}: .*{what}"):
        load_csv(p)


def test_write_csv_offsets_in_any_zone_read_back_to_the_same_instants(tmp_path):
    for zone in ("America/St_Johns", "Asia/Kolkata", "Europe/Berlin"):  # -03:30/-02:30, +05:30, +01/+02
        idx = pd.date_range("2024-03-08 09:00", "2024-04-05 09:00", freq="7D", tz=zone)
        bars = pd.DataFrame({"open": 1.5, "high": 2.25, "low": 1.0, "close": 2.0, "volume": 0.0}, index=idx)
        write_csv(bars, tmp_path / "z.csv")
        text = (tmp_path / "z.csv").read_text()
        assert all(t.strftime("%Y-%m-%dT%H:%M:%S%z") in text for t in idx)
        got = load_csv(tmp_path / "z.csv")
        assert (got.index == idx).all()
        # offsets that change (DST) name their zone; a single offset stays a fixed offset
        assert str(got.index.tz) == (zone if zone != "Asia/Kolkata" else "UTC+05:30")


def test_synthetic_bars_stay_marked_through_a_csv_and_only_they(tmp_path):
    from mltrade.feeds.loader import DataFileError, load_csv, meta_path, write_csv
    from mltrade.feeds.sample import sample_intraday

    bars = sample_intraday("2018-06-04", "2018-06-04")
    path = tmp_path / "b.csv"
    write_csv(bars, path)
    assert meta_path(path).name == "b.csv.meta.json"
    back = load_csv(path)
    assert back.attrs["synthetic_intraday"] is True and "synthetic" in back.attrs["source"]
    # real bars written to the same path: the stale mark goes, the file reads as real data
    real = bars.copy()
    real.attrs = {}
    write_csv(real, path)
    assert not meta_path(path).exists() and load_csv(path).attrs["synthetic_intraday"] is False
    meta_path(path).write_text("{not json")
    with pytest.raises(DataFileError, match=r"b\.csv\.meta\.json: not valid JSON"):
        load_csv(path)
