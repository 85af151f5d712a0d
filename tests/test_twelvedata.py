"""TwelveData client against a real HTTP server on 127.0.0.1 (tests/fake_twelvedata.py)."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from mltrade.feeds.twelvedata import (RateLimiter, TwelveDataAuthError, TwelveDataClient,
                                      TwelveDataRateLimitError, TwelveDataRequestError,
                                      TwelveDataServerError, client_from_config, merge_bars,
                                      parse_time_series)
from tests.fake_twelvedata import FakeTwelveData, random_bars

KEY = "test-key-123"


@pytest.fixture(scope="module")
def bars():
    return random_bars("2024-03-01", days=12, seed=1)  # spans the US DST switch (2024-03-10)


@pytest.fixture
def server(bars):
    with FakeTwelveData(bars, key=KEY) as srv:
        yield srv


def make_client(srv, **kw):
    opts = dict(api_key=KEY, base_url=srv.url, credits_per_minute=1000, timeout=2.0, max_retries=3,
                backoff_base=0.001, backoff_max=0.01, seed=0, rate_period=0.05)
    opts.update(kw)
    return TwelveDataClient(**opts)


def test_pages_whole_range_ascending_in_exchange_tz(server, bars):
    client = make_client(server, outputsize=100)
    got = client.time_series("NDX", "5min", "2024-03-01", "2024-03-20")
    pd.testing.assert_frame_equal(got, bars, check_freq=False)
    assert got.index.is_monotonic_increasing and not got.index.duplicated().any()
    assert str(got.index.tz) == "America/New_York"
    assert got.index[0].hour == 9 and got.index[0].minute == 30
    assert len(server.requests) >= len(bars) // 100
    assert all(int(r["params"]["outputsize"]) <= 100 for r in server.requests)
    assert client.stats.requests == len(server.requests) == client.stats.credits


def test_truncated_page_is_continued_backwards(server, bars):
    client = make_client(server, outputsize=50)
    # one wide window holds far more than 50 bars: the client must page back inside it
    got = client._fetch_window("NDX", "5min", pd.Timestamp("2024-03-04"), pd.Timestamp("2024-03-06"),
                               "America/New_York")
    want = bars.loc["2024-03-04":"2024-03-05"]
    pd.testing.assert_frame_equal(got, want, check_freq=False)
    assert len(server.requests) >= 4


def test_end_is_exclusive_and_edges_deduplicated(server, bars):
    client = make_client(server, outputsize=78)
    end = bars.index[200]
    got = client.time_series("NDX", "5min", bars.index[10], end)
    pd.testing.assert_frame_equal(got, bars.iloc[10:200], check_freq=False)


def test_rate_limit_429_status_and_body_then_success(server, bars):
    client = make_client(server)
    server.faults.extend(["429", "429body"])
    got = client.time_series("NDX", "5min", "2024-03-04", "2024-03-05")
    assert len(got) == 78 and client.stats.retries == 2


def test_rate_limit_exhausted_raises(server):
    client = make_client(server, max_retries=2)
    server.faults.extend(["429"] * 3)
    with pytest.raises(TwelveDataRateLimitError, match="429"):
        client.time_series("NDX", "5min", "2024-03-04", "2024-03-05")
    assert len(server.requests) == 3


@pytest.mark.parametrize("fault", ["500", "502", "malformed"])
def test_transient_errors_are_retried(server, fault):
    client = make_client(server)
    server.faults.extend([fault, fault])
    got = client.time_series("NDX", "5min", "2024-03-04", "2024-03-05")
    assert len(got) == 78 and client.stats.retries == 2


def test_persistent_server_error_gives_up(server):
    client = make_client(server, max_retries=2)
    server.faults.extend(["500"] * 5)
    with pytest.raises(TwelveDataServerError, match=r"HTTP 500.*gave up after 2 retries"):
        client.time_series("NDX", "5min", "2024-03-04", "2024-03-05")
    server.faults.clear()
    server.faults.extend(["malformed"] * 5)
    with pytest.raises(TwelveDataServerError, match="malformed answer"):
        make_client(server, max_retries=1).time_series("NDX", "5min", "2024-03-04", "2024-03-05")


def test_slow_answer_times_out_then_retries(bars):
    with FakeTwelveData(bars, key=KEY, slow_seconds=1.5) as srv:
        client = make_client(srv, timeout=0.5)
        srv.faults.append("slow")
        got = client.time_series("NDX", "5min", "2024-03-04", "2024-03-05")
        assert len(got) == 78 and client.stats.retries >= 1
        srv.faults.clear()
        srv.faults.extend(["slow"] * 3)
        with pytest.raises(TwelveDataServerError, match="time-out"):
            make_client(srv, timeout=0.5, max_retries=1).time_series("NDX", "5min", "2024-03-04",
                                                                     "2024-03-05")


def test_auth_error_quotes_api_and_never_the_key(server, caplog):
    caplog.set_level(logging.DEBUG)
    client = make_client(server, api_key="wrong-secret-key-987")
    with pytest.raises(TwelveDataAuthError) as err:
        client.time_series("NDX", "5min", "2024-03-04", "2024-03-05")
    assert "apikey** parameter is incorrect" in str(err.value)
    assert "401" in str(err.value)
    assert "wrong-secret-key-987" not in str(err.value)
    assert all("wrong-secret-key-987" not in r.getMessage() for r in caplog.records)
    # the key travels in a header, not in the URL
    assert all("apikey" not in r["params"] for r in server.requests)
    assert server.requests[0]["headers"]["Authorization"] == "apikey wrong-secret-key-987"


def test_key_never_in_errors_or_logs_for_any_failure(server, caplog):
    caplog.set_level(logging.DEBUG)
    client = make_client(server, max_retries=1)
    server.faults.extend(["500", "malformed", "429", "429body", "400"])
    texts = []
    for _ in range(3):
        try:
            client.time_series("NDX", "5min", "2024-03-04", "2024-03-05")
        except Exception as exc:  # noqa: BLE001 - we inspect every message
            texts.append(str(exc))
    # a connection refused error (URL in the exception text) must be scrubbed too
    dead = TwelveDataClient(api_key=KEY, base_url="http://127.0.0.1:9", max_retries=0, timeout=0.5)
    with pytest.raises(TwelveDataServerError, match="connection failed") as err:
        dead.time_series("NDX", "5min", "2024-03-04", "2024-03-05")
    texts.append(str(err.value))
    assert texts and all(KEY not in t for t in texts)
    assert all(KEY not in r.getMessage() for r in caplog.records)


def test_bad_request_body_raises_clear_error(server):
    client = make_client(server)
    server.faults.append("400")
    with pytest.raises(TwelveDataRequestError, match="interval\\*\\* parameter is not supported"):
        client.time_series("NDX", "5min", "2024-03-04", "2024-03-05")
    with pytest.raises(TwelveDataRequestError, match="symbol.*not found"):
        client.time_series("XYZ", "5min", "2024-03-04", "2024-03-05", tz="America/New_York")


def test_no_data_window_is_empty_not_an_error(server):
    client = make_client(server)
    got = client.time_series("NDX", "5min", "2024-03-02", "2024-03-04")  # a weekend
    assert got.empty


def test_missing_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("TWELVEDATA_API_KEY", raising=False)
    with pytest.raises(TwelveDataAuthError, match="TWELVEDATA_API_KEY"):
        TwelveDataClient()
    monkeypatch.setenv("TWELVEDATA_API_KEY", "from-env")
    assert TwelveDataClient()._key == "from-env"


def test_incomplete_bar_is_not_returned(bars):
    now = bars.index[100].tz_convert("UTC") + pd.Timedelta(minutes=2)  # bar 100 is forming
    with FakeTwelveData(bars, key=KEY, now=lambda: now) as srv:
        client = make_client(srv, now=lambda: now)
        got = client.time_series("NDX", "5min", bars.index[0], None)
        pd.testing.assert_frame_equal(got, bars.iloc[:100], check_freq=False)


def test_rate_limiter_sliding_window_virtual_time():
    t = [0.0]
    lim = RateLimiter(3, period=60.0, clock=lambda: t[0], sleep=lambda s: t.__setitem__(0, t[0] + s))
    stamps = []
    for _ in range(10):
        lim.acquire(1)
        stamps.append(t[0])
        t[0] += 1.0  # one second of work per request
    stamps = np.array(stamps)
    for s in stamps:
        assert ((stamps >= s) & (stamps < s + 60.0)).sum() <= 3
    assert stamps[-1] >= 180.0  # 10 requests at 3 per minute need 3 full windows
    with pytest.raises(ValueError, match="exceeds the budget"):
        lim.acquire(4)


def test_rate_limiter_against_server(server):
    client = make_client(server, credits_per_minute=3, rate_period=0.5, outputsize=20)
    client.time_series("NDX", "5min", "2024-03-04", "2024-03-05")  # 78 bars -> >= 4 requests
    times = np.array([r["t"] for r in server.requests])
    assert len(times) >= 4
    # unlimited, all requests would arrive within a few ms; allow 0.15 s of scheduling noise
    for s in times:
        assert ((times >= s) & (times < s + 0.5 - 0.15)).sum() <= 3
    assert client.stats.rate_wait_s > 0


def test_parse_and_merge_pure_functions():
    body = {"meta": {"exchange_timezone": "Europe/Berlin"},
            "values": [{"datetime": "2024-01-02 09:05:00", "open": "2", "high": "3", "low": "1",
                        "close": "2.5"},
                       {"datetime": "2024-01-02 09:00:00", "open": "1", "high": "2", "low": "0.5",
                        "close": "2"}]}
    df = parse_time_series(body, "5min", "GDAXI")
    assert list(df["open"]) == [1.0, 2.0] and str(df.index.tz) == "Europe/Berlin"
    assert (df["volume"] == 0).all()
    newer = df.iloc[[1]].assign(close=9.0)
    merged = merge_bars([df, newer])
    assert len(merged) == 2 and merged["close"].iloc[-1] == 9.0
    with pytest.raises(TwelveDataServerError, match="lack field"):
        parse_time_series({"values": [{"datetime": "2024-01-02", "open": "1"}]}, "1day")
    daily = parse_time_series({"values": [{"datetime": "2024-01-03", "open": "1", "high": "1", "low": "1",
                                           "close": "1"}]}, "1day", "NDX")
    assert daily.index.tz is None


def test_client_from_config(server):
    c = client_from_config({"twelvedata": {"api_key": KEY, "base_url": server.url, "credits_per_minute": 55,
                                           "timeout": 3, "max_retries": 1, "backoff_base": 0.001}})
    assert c.limiter.credits == 55 and c.max_retries == 1 and c.base_url == server.url


@pytest.mark.timeout(60)
def test_tiny_pages_always_make_progress(server, bars):
    client = make_client(server, outputsize=1)
    got = client._fetch_window("NDX", "5min", bars.index[3].tz_localize(None), bars.index[9].tz_localize(None),
                               "America/New_York")
    pd.testing.assert_frame_equal(got, bars.iloc[3:9], check_freq=False)
    assert len(server.requests) <= 2 * 6 + 2


# -- Retry-After on 429/503 --------------------------------------------------------------------------
def _recording_client(srv, **kw):
    """Client whose sleeps are recorded instead of slept (the limiter never needs to wait here)."""
    slept = []
    kw.setdefault("backoff_max", 30.0)
    return make_client(srv, sleep=slept.append, **kw), slept


def test_retry_after_seconds_replaces_backoff_on_429_and_503(server):
    client, slept = _recording_client(server)
    server.faults.extend(["429;retry-after=2", "503;retry-after=1.5", "500"])
    got, _ = client.time_series_page("NDX", "5min", pd.Timestamp("2024-03-04"), pd.Timestamp("2024-03-04 23:00"))
    assert len(got) == 78 and client.stats.retries == 3
    assert slept[:2] == [2.0, 1.5]
    # the header-less 500 keeps the exponential back-off: base 0.001 * 2**2 * (1 + jitter * u)
    assert 0.004 <= slept[2] <= 0.004 * 1.5
    assert client.stats.retry_waits == slept
    assert server.requests[0]["path"] == "/time_series" and len(server.requests) == 4


def test_retry_after_is_capped_by_backoff_max(server):
    client, slept = _recording_client(server, backoff_max=5.0)
    server.faults.extend(["429;retry-after=120", "503;retry-after=3600"])
    client.time_series_page("NDX", "5min", pd.Timestamp("2024-03-04"), pd.Timestamp("2024-03-04 23:00"))
    assert slept == [5.0, 5.0]


def test_retry_after_http_date_is_relative_to_the_clock(server):
    import email.utils
    now = pd.Timestamp("2026-01-05 12:00:00", tz="UTC")
    client, slept = _recording_client(server, now=lambda: now)
    future = email.utils.format_datetime((now + pd.Timedelta(seconds=7)).to_pydatetime(), usegmt=True)
    past = email.utils.format_datetime((now - pd.Timedelta(seconds=30)).to_pydatetime(), usegmt=True)
    server.faults.extend([f"503;retry-after={future}", f"429;retry-after={past}"])
    got, _ = client.time_series_page("NDX", "5min", pd.Timestamp("2024-03-04"), pd.Timestamp("2024-03-04 23:00"))
    assert len(got) == 78
    assert slept == [7.0, 0.0]  # a date already past means "retry now"


def test_unparseable_retry_after_falls_back_to_backoff(server):
    client, slept = _recording_client(server)
    server.faults.extend(["503;retry-after=soon", "503;retry-after=-5"])
    client.time_series_page("NDX", "5min", pd.Timestamp("2024-03-04"), pd.Timestamp("2024-03-04 23:00"))
    assert 0.001 <= slept[0] <= 0.0015  # exponential back-off, attempt 0
    assert slept[1] == 0.0  # negative seconds: clamped to zero, not an error


def test_retry_after_still_gives_up_after_max_retries(server):
    client, slept = _recording_client(server, max_retries=2)
    server.faults.extend(["429;retry-after=1"] * 3)
    with pytest.raises(TwelveDataRateLimitError, match="after 2 retries"):
        client.time_series_page("NDX", "5min", pd.Timestamp("2024-03-04"), pd.Timestamp("2024-03-04 23:00"))
    assert slept == [1.0, 1.0] and len(server.requests) == 3


def test_429_without_retry_after_waits_the_credit_window_and_reports_it(server):
    waits = []
    sec = {"api_key": KEY, "base_url": server.url, "credits_per_minute": 5, "credit_window": 0.4,
           "backoff_base": 0.001, "max_retries": 2}
    client = client_from_config({"twelvedata": sec}, on_wait=lambda s, why: waits.append((s, why)))
    assert client.limiter.period == 0.4
    server.faults.append("429")
    got = client.time_series("NDX", "5min", "2024-03-04", "2024-03-05")
    assert len(got) == 78
    window = [(s, why) for s, why in waits if "credit window" in why]
    assert len(window) == 1 and "HTTP 429 without Retry-After" in window[0][1]
    assert 0.2 < window[0][0] <= 0.4  # the rest of the configured window, not a minute
    assert any(why.startswith("retry 1/2 after: ") and "429" in why for _, why in waits)


def test_credit_window_is_validated(tmp_path):
    from mltrade.config import ConfigError, load_config

    bad = tmp_path / "c.toml"
    bad.write_text('[twelvedata]\ncredit_window = "a minute"\n')
    with pytest.raises(ConfigError, match="credit_window' expects float"):
        load_config(bad)
    bad.write_text("[twelvedata]\ncredit_window = 0\n")
    with pytest.raises(ValueError, match="credit_window: expected a positive number of seconds, got 0"):
        client_from_config(load_config(bad), api_key=KEY)
