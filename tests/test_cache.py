"""Parquet bar cache: incremental updates, resume after interruption, atomic writes, corrupt files."""
from __future__ import annotations

import os
import re

import pandas as pd
import pytest

from mltrade.feeds.cache import BarCache, CacheCorruptError, cache_path, read_cache, write_atomic
from mltrade.feeds.twelvedata import TwelveDataClient, TwelveDataServerError
from tests.fake_twelvedata import FakeTwelveData, random_bars

KEY = "cache-key"


@pytest.fixture(scope="module")
def bars():
    return random_bars("2024-04-01", days=15, seed=3)


def client_for(srv, **kw):
    opts = dict(api_key=KEY, base_url=srv.url, credits_per_minute=1000, rate_period=0.05, timeout=2.0,
                max_retries=1, backoff_base=0.001, backoff_max=0.01, outputsize=200, seed=0)
    opts.update(kw)
    return TwelveDataClient(**opts)


def test_update_fetches_only_missing_ranges_and_merges(tmp_path, bars):
    cache = BarCache(tmp_path)
    with FakeTwelveData(bars, key=KEY) as srv:
        c = client_for(srv)
        r1 = cache.update(c, "NDX", "5min", "2024-04-05", "2024-04-12")
        assert r1.new_bars == len(bars.loc["2024-04-05":"2024-04-11"]) and r1.requests > 0
        n_req = len(srv.requests)
        # same range again: nothing to fetch
        r2 = cache.update(client_for(srv), "NDX", "5min", "2024-04-05", "2024-04-12")
        assert r2.requests == 0 and r2.new_bars == 0 and len(srv.requests) == n_req
        # wider range: only the head and the tail are requested
        r3 = cache.update(client_for(srv), "NDX", "5min", "2024-04-01", "2024-04-20")
        asked = [r["params"] for r in srv.requests[n_req:]]
        assert all(not ("2024-04-05" <= a["start_date"][:10] < "2024-04-11") for a in asked)
        assert [(str(s.date()), str(e.date())) for s, e in r3.ranges] == [("2024-04-01", "2024-04-05"),
                                                                          ("2024-04-12", "2024-04-20")]
    got = cache.load("NDX", "5min")
    pd.testing.assert_frame_equal(got, bars.loc[:"2024-04-19"], check_freq=False)
    assert cache.path("NDX", "5min") == tmp_path / "NDX_5min.parquet"
    sliced = cache.load("NDX", "5min", "2024-04-08", "2024-04-09")
    assert len(sliced) == 78 and sliced.index[0].day == 8


def test_interrupted_fetch_resumes_without_loss(tmp_path, bars):
    cache = BarCache(tmp_path)
    with FakeTwelveData(bars, key=KEY) as srv:
        c = client_for(srv, max_retries=0)
        seen = []
        srv.faults.extend([None] * 4 + ["500"] * 10)  # 4 good answers, then the server breaks
        with pytest.raises(TwelveDataServerError):
            cache.update(c, "NDX", "5min", "2024-04-01", "2024-04-25",
                         on_window=lambda s, e, n: seen.append(n))
        part = cache.load("NDX", "5min")
        assert 0 < len(part) < len(bars)
        # every saved window is complete: the partial cache is a prefix of the truth
        pd.testing.assert_frame_equal(part, bars.iloc[:len(part)], check_freq=False)
        srv.faults.clear()
        n_req = len(srv.requests)
        r = cache.update(client_for(srv), "NDX", "5min", "2024-04-01", "2024-04-25")
        assert r.new_bars == len(bars) - len(part)
        # the resumed run starts where the first one stopped
        first = min(pd.Timestamp(q["params"]["start_date"]) for q in srv.requests[n_req:])
        assert first >= part.index[-1].tz_localize(None) - pd.Timedelta(days=1)
    pd.testing.assert_frame_equal(cache.load("NDX", "5min"), bars, check_freq=False)


def test_corrupt_file_is_named_and_never_overwritten(tmp_path, bars):
    p = cache_path(tmp_path, "NDX", "5min")
    p.write_bytes(b"PAR1 this is not parquet")
    cache = BarCache(tmp_path)
    with FakeTwelveData(bars, key=KEY) as srv:
        with pytest.raises(CacheCorruptError, match=str(p).replace(".", r"\.")):
            cache.update(client_for(srv), "NDX", "5min", "2024-04-01", "2024-04-03")
        assert srv.requests == []
    assert p.read_bytes() == b"PAR1 this is not parquet"
    with pytest.raises(CacheCorruptError, match="move or delete"):
        cache.load("NDX", "5min")


def test_wrong_columns_are_rejected(tmp_path, bars):
    p = tmp_path / "x.parquet"
    bars.drop(columns="low").to_parquet(p)
    with pytest.raises(CacheCorruptError, match=r"missing \['low'\]"):
        read_cache(p)


def test_atomic_write_leaves_old_file_on_failure(tmp_path, bars, monkeypatch):
    p = tmp_path / "NDX_5min.parquet"
    write_atomic(p, bars.iloc[:10], {"covered": []})
    before = p.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("mltrade.feeds.cache.os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(p, bars, {"covered": []})
    assert p.read_bytes() == before
    assert [f for f in os.listdir(tmp_path)] == ["NDX_5min.parquet"]  # no temp file left behind
    df, meta = read_cache(p)
    pd.testing.assert_frame_equal(df, bars.iloc[:10], check_freq=False)
    assert str(df.index.tz) == "America/New_York"


def test_fetch_command_end_to_end(tmp_path, bars, monkeypatch, capsys):
    from mltrade.cli import main

    monkeypatch.setenv("TWELVEDATA_API_KEY", KEY)
    cfg = tmp_path / "cfg.toml"
    cfg.write_text("[twelvedata]\nbackoff_base = 0.001\nmax_retries = 1\noutputsize = 300\n"
                   "credits_per_minute = 1000\n")
    with FakeTwelveData(bars, key=KEY) as srv:
        args = ["fetch", "--symbol", "NDX", "--interval", "5min", "--start", "2024-04-01", "--end",
                "2024-04-10", "--data-dir", str(tmp_path / "d"), "--config", str(cfg), "--base-url", srv.url,
                "--no-progress"]
        assert main(args) == 0
        out = capsys.readouterr().out
        n = len(bars.loc["2024-04-01":"2024-04-09"])
        assert f"{n} bars fetched, {len(srv.requests)} requests made, {len(srv.requests)} credits used" in out
        # the same download through the lead's `data fetch` alias: nothing left to fetch
        assert main(["data"] + args) == 0
        assert "0 bars fetched, 0 requests made" in capsys.readouterr().out
    df = BarCache(tmp_path / "d").load("NDX", "5min")
    pd.testing.assert_frame_equal(df, bars.loc["2024-04-01":"2024-04-09"], check_freq=False)


def test_fetch_command_without_key_says_how_to_set_it(tmp_path, monkeypatch, capsys):
    from mltrade.cli import main

    monkeypatch.delenv("TWELVEDATA_API_KEY", raising=False)
    rc = main(["fetch", "--symbol", "NDX", "--start", "2024-04-01", "--data-dir", str(tmp_path),
               "--base-url", "http://127.0.0.1:9", "--no-progress"])
    assert rc == 2 and "TWELVEDATA_API_KEY" in capsys.readouterr().err


def test_recent_bars_published_late_are_fetched_next_time(tmp_path, bars):
    t = [pd.Timestamp("2024-04-03 11:00:10", tz="America/New_York")]
    cache = BarCache(tmp_path)
    with FakeTwelveData(bars, key=KEY, now=lambda: t[0], publish_lag=pd.Timedelta(seconds=30)) as srv:
        cache.update(client_for(srv, now=lambda: t[0]), "NDX", "5min", "2024-04-01")
        got = cache.load("NDX", "5min")
        # 10:55 bar closed at 11:00 but is not published yet; the forming 11:00 bar is never stored
        assert got.index[-1] == pd.Timestamp("2024-04-03 10:50", tz="America/New_York")
        t[0] = pd.Timestamp("2024-04-03 11:20:00", tz="America/New_York")
        r = cache.update(client_for(srv, now=lambda: t[0]), "NDX", "5min", "2024-04-01")
        assert r.requests == 1
    published = pd.Timestamp("2024-04-03 11:20", tz="America/New_York") - pd.Timedelta(seconds=30)
    truth = bars[bars.index + pd.Timedelta(minutes=5) <= published]
    assert truth.index[-1].strftime("%H:%M") == "11:10"
    pd.testing.assert_frame_equal(cache.load("NDX", "5min"), truth, check_freq=False)


def test_hourly_bars_forming_bar_not_aligned_to_the_hour(tmp_path):
    hourly = random_bars("2024-04-01", days=3, seed=4, interval=60)
    assert hourly.index[0].minute == 30  # 09:30, 10:30, ... like TwelveData's index bars
    now = pd.Timestamp("2024-04-02 10:45", tz="America/New_York")
    with FakeTwelveData(hourly, key=KEY, interval="1h", now=lambda: now) as srv:
        got = client_for(srv, now=lambda: now).time_series("NDX", "1h", "2024-04-01")
    assert got.index[-1] == pd.Timestamp("2024-04-02 09:30", tz="America/New_York")
    pd.testing.assert_frame_equal(got, hourly[hourly.index + pd.Timedelta(hours=1) <= now], check_freq=False)


def test_missing_ranges_property():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from mltrade.feeds.cache import _merge_ranges, _subtract

    t0 = pd.Timestamp("2024-01-01")
    ranges = st.lists(st.tuples(st.integers(0, 200), st.integers(1, 50)).map(
        lambda p: (t0 + pd.Timedelta(hours=p[0]), t0 + pd.Timedelta(hours=p[0] + p[1]))), max_size=6)

    @settings(max_examples=150, deadline=None)
    @given(ranges, st.integers(0, 250), st.integers(1, 100))
    def check(covered, s, n):
        want = (t0 + pd.Timedelta(hours=s), t0 + pd.Timedelta(hours=s + n))
        gaps = _subtract(want, covered)
        for h in range(s, s + n):  # every hour of the wanted range is either covered or in exactly one gap
            t = t0 + pd.Timedelta(hours=h, minutes=30)
            in_cov = any(a <= t < b for a, b in covered)
            in_gap = sum(a <= t < b for a, b in gaps)
            assert in_gap == (0 if in_cov else 1)
        assert all(want[0] <= a < b <= want[1] for a, b in gaps)
        merged = _merge_ranges(covered)
        assert all(b < c for (_, b), (c, _) in zip(merged, merged[1:]))

    check()


def _visible_lines(text: str) -> list:
    """What a terminal shows: each line's text after its last carriage return, blank lines dropped."""
    return [ln.split("\r")[-1].strip() for ln in text.split("\n") if ln.split("\r")[-1].strip()]


def test_fetch_with_a_wrong_key_prints_one_line_and_no_resume_advice(tmp_path, bars):
    import subprocess
    import sys

    env = {**os.environ, "TWELVEDATA_API_KEY": "wrong-key-555"}
    with FakeTwelveData(bars, key=KEY) as srv:
        proc = subprocess.run([sys.executable, "-m", "mltrade.cli", "fetch", "--symbol", "NDX", "--start",
                               "2024-04-01", "--end", "2024-04-05", "--data-dir", str(tmp_path),
                               "--base-url", srv.url], capture_output=True, env=env, timeout=120)
    err, out = proc.stderr.decode(), proc.stdout.decode()  # bytes: keep the progress bar's carriage returns
    assert proc.returncode == 1
    lines = _visible_lines(err) + _visible_lines(out)
    assert len(lines) == 1, lines
    assert lines[0].startswith("mltrade fetch: error: ") and "HTTP 401" in lines[0]
    assert "resume" not in lines[0] and "WARNING" not in err
    assert "wrong-key-555" not in err


def test_fetch_after_a_passing_failure_advises_to_resume(tmp_path, bars, monkeypatch, capsys):
    from mltrade.cli import main

    monkeypatch.setenv("TWELVEDATA_API_KEY", KEY)
    cfg = tmp_path / "cfg.toml"
    cfg.write_text("[twelvedata]\nbackoff_base = 0.001\nmax_retries = 1\ncredits_per_minute = 1000\n")
    with FakeTwelveData(bars, key=KEY) as srv:
        srv.faults.extend(["500", "500"])
        rc = main(["fetch", "--symbol", "NDX", "--start", "2024-04-01", "--end", "2024-04-05", "--data-dir",
                   str(tmp_path / "d"), "--config", str(cfg), "--base-url", srv.url, "--no-progress"])
    lines = _visible_lines(capsys.readouterr().err)
    # one line for the kind of failure while it retries (issue 21), then the one error line
    assert rc == 1 and len(lines) == 2
    assert "server error HTTP 500" in lines[0] and "retrying" in lines[0]
    assert "HTTP 500" in lines[1] and "0 bars saved" in lines[1]
    assert "re-run the same command to resume" in lines[1]


def test_fetch_429_waits_the_configured_credit_window_and_shows_it(tmp_path, bars, monkeypatch, capsys):
    from mltrade.cli import main

    monkeypatch.setenv("TWELVEDATA_API_KEY", KEY)
    cfg = tmp_path / "cfg.toml"
    cfg.write_text("[twelvedata]\nbackoff_base = 0.001\nmax_retries = 2\ncredits_per_minute = 8\n"
                   "credit_window = 1.5\n")
    with FakeTwelveData(bars, key=KEY) as srv:
        srv.faults.append("429")  # no Retry-After header: the client waits out the credit window
        rc = main(["fetch", "--symbol", "NDX", "--start", "2024-04-01", "--end", "2024-04-05", "--data-dir",
                   str(tmp_path / "d"), "--config", str(cfg), "--base-url", srv.url])
        gap = srv.requests[1]["t"] - srv.requests[0]["t"]
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert 1.2 < gap < 30  # the configured window, not the default minute
    assert re.search(r"waiting \d s: rate limited \(HTTP 429 without Retry-After\): waiting out the 1\.5 s "
                     r"credit window", captured.err), captured.err
    assert BarCache(tmp_path / "d").load("NDX", "5min").index[-1].date() == pd.Timestamp("2024-04-04").date()
