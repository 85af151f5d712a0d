"""TwelveDataFeed: historical mode from the cache, live mode against the loopback fake server."""
from __future__ import annotations

import backtrader as bt
import pandas as pd
import pytest

from mltrade.feeds.cache import BarCache, write_atomic
from mltrade.feeds.sessions import in_session, last_session_open, next_bar_close
from mltrade.feeds.twelvedata import TwelveDataClient
from mltrade.feeds.twelvedata_feed import TwelveDataFeed
from tests.fake_twelvedata import FakeTwelveData, VirtualClock, random_bars

KEY = "feed-key"
NY = "America/New_York"


@pytest.fixture(scope="module")
def bars():
    return random_bars("2024-03-06", days=4, seed=5)  # Wed..Mon across the DST weekend


class Recorder(bt.Strategy):
    def __init__(self) -> None:
        self.rows = []
        self.status = []

    def notify_data(self, data, status, *args, **kwargs) -> None:
        self.status.append(data._getstatusname(status))

    def next(self) -> None:
        d = self.data
        self.rows.append((d.datetime.datetime(0), d.open[0], d.high[0], d.low[0], d.close[0],
                          int(d.session_bar[0]), int(d.session_left[0])))


def run(feed) -> Recorder:
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed)
    cerebro.addstrategy(Recorder)
    return cerebro.run()[0]


def expected_rows(df):
    local = df.index.tz_convert(NY).tz_localize(None)
    return [(t.to_pydatetime(), r.open, r.high, r.low, r.close) for t, r in zip(local, df.itertuples())]


def test_historical_mode_reads_the_cache(tmp_path, bars):
    write_atomic(BarCache(tmp_path).path("NDX", "5min"), bars, {"covered": []})
    feed = TwelveDataFeed(symbol="NDX", data_dir=str(tmp_path), start="2024-03-07", end="2024-03-09")
    assert not feed.islive()
    st = run(feed)
    want = bars.loc["2024-03-07":"2024-03-08"]
    assert [r[:5] for r in st.rows] == pytest.approx(expected_rows(want))
    assert [r[5] for r in st.rows[:3]] == [0, 1, 2] and st.rows[77][6] == 0 and st.rows[78][5] == 0


def test_historical_mode_without_cache_says_what_to_run(tmp_path):
    with pytest.raises(ValueError, match=r"NDX_5min\.parquet.*mltrade fetch --symbol NDX"):
        TwelveDataFeed(symbol="NDX", data_dir=str(tmp_path))


def live_feed(srv, clock, **kw):
    client = TwelveDataClient(api_key=KEY, base_url=srv.url, credits_per_minute=1000, rate_period=0.01,
                              timeout=2.0, max_retries=0, backoff_base=0.0, now=clock, sleep=clock.sleep,
                              outputsize=500)
    return TwelveDataFeed(symbol="NDX", live=True, client=client, clock=clock, sleep=clock.sleep,
                          max_wait=60.0, poll_delay=2.0, reconnect_delay=30.0, **kw)


@pytest.mark.timeout(120)
def test_live_mode_backfills_then_polls_once_per_bar(bars):
    clock = VirtualClock(pd.Timestamp("2024-03-07 10:02:30", tz=NY).tz_convert("UTC"))
    until = pd.Timestamp("2024-03-07 11:00:03", tz=NY)
    with FakeTwelveData(bars, key=KEY, now=clock) as srv:
        feed = live_feed(srv, clock, start="2024-03-06 09:30", live_until=until)
        assert feed.islive()
        st = run(feed)
        n_requests = len(srv.requests)
    want = bars[(bars.index >= pd.Timestamp("2024-03-06 09:30", tz=NY))
                & (bars.index + pd.Timedelta(minutes=5) <= until - pd.Timedelta(seconds=3))]
    assert [r[:5] for r in st.rows] == pytest.approx(expected_rows(want))  # final values, never provisional
    assert st.rows[-1][0] == pd.Timestamp("2024-03-07 10:55").to_pydatetime()
    # every bar was emitted only once it was complete
    assert all(at >= start + pd.Timedelta(minutes=5) for start, at in feed.emitted_at)
    # live phase: one poll per bar (10:05 .. 11:00 closes) after the back-fill poll
    assert feed.polls == 1 + 12 and feed.failed_polls == 0
    assert "DELAYED" in st.status and st.status[-1] == "LIVE"
    assert n_requests >= feed.polls  # the back-fill poll pages (outputsize 500 < 1.5 sessions of bars)


@pytest.mark.timeout(120)
def test_live_mode_reconnects_and_backfills_the_gap(bars):
    clock = VirtualClock(pd.Timestamp("2024-03-08 15:31:00", tz=NY).tz_convert("UTC"))
    until = pd.Timestamp("2024-03-11 10:01:00", tz=NY)  # over the weekend into Monday
    with FakeTwelveData(bars, key=KEY, now=clock) as srv:
        srv.outage = (pd.Timestamp("2024-03-08 15:40", tz=NY), pd.Timestamp("2024-03-08 15:52", tz=NY))
        feed = live_feed(srv, clock, live_until=until)
        st = run(feed)
    start = pd.Timestamp("2024-03-08 09:30", tz=NY)  # default: the latest session's open
    want = bars[(bars.index >= start) & (bars.index + pd.Timedelta(minutes=5) <= until)]
    assert [r[:5] for r in st.rows] == pytest.approx(expected_rows(want))  # nothing lost, nothing twice
    assert feed.failed_polls >= 2
    assert st.status.count("DISCONNECTED") == 1 and "CONNECTED" in st.status
    # the bars closing during the outage arrive together right after it
    during = [at for s, at in feed.emitted_at
              if pd.Timestamp("2024-03-08 15:35", tz=NY) <= s < pd.Timestamp("2024-03-08 15:50", tz=NY)]
    assert len(during) == 3 and len(set(during)) == 1 and during[0] >= srv.outage[1]
    # Friday's close to Monday: the feed slept through the weekend instead of polling every 5 minutes
    assert feed.polls < 40
    assert st.rows[-1][0] == pd.Timestamp("2024-03-11 09:55").to_pydatetime()
    assert st.rows[-1][5] == 5  # session_bar counted from Monday's open (EDT after the DST switch)


def test_session_helpers():
    t = pd.Timestamp("2024-03-08 15:02:30", tz=NY)
    assert next_bar_close(t, "XNAS", 5) == pd.Timestamp("2024-03-08 15:05", tz=NY)
    assert next_bar_close(pd.Timestamp("2024-03-08 16:30", tz=NY), "XNAS", 5) == \
        pd.Timestamp("2024-03-11 09:35", tz=NY)
    assert next_bar_close(pd.Timestamp("2024-11-29 12:58", tz=NY), "XNAS", 5) == \
        pd.Timestamp("2024-11-29 13:00", tz=NY)  # early close
    assert last_session_open(pd.Timestamp("2024-03-10 12:00", tz=NY), "XNAS") == \
        pd.Timestamp("2024-03-08 09:30", tz=NY)
    assert in_session(t, "XNAS") and not in_session(pd.Timestamp("2024-07-04 11:00", tz=NY), "XNAS")
    assert next_bar_close(pd.Timestamp("2024-03-08 08:00", tz="Europe/Berlin"), "XETR", 5) == \
        pd.Timestamp("2024-03-08 09:05", tz="Europe/Berlin")
    with pytest.raises(ValueError, match="timezone-aware"):
        next_bar_close(pd.Timestamp("2024-03-08 15:00"), "XNAS", 5)


@pytest.mark.timeout(120)
def test_live_mode_bars_published_late_are_asked_again_soon(bars):
    clock = VirtualClock(pd.Timestamp("2024-03-07 10:02:30", tz=NY).tz_convert("UTC"))
    until = pd.Timestamp("2024-03-07 10:31:00", tz=NY)
    with FakeTwelveData(bars, key=KEY, now=clock, publish_lag=pd.Timedelta(seconds=20)) as srv:
        feed = live_feed(srv, clock, start="2024-03-07 09:30", live_until=until, late_retry=5.0)
        st = run(feed)
    want = bars[(bars.index >= pd.Timestamp("2024-03-07 09:30", tz=NY))
                & (bars.index + pd.Timedelta(minutes=5, seconds=20) <= until)]
    assert [r[:5] for r in st.rows] == pytest.approx(expected_rows(want))
    live = [(s, at) for s, at in feed.emitted_at if s >= pd.Timestamp("2024-03-07 10:00", tz=NY)]
    assert len(live) == 6  # 10:00 .. 10:25
    # each arrives within the publication lag plus one retry, not a whole interval late
    assert all(at - (s + pd.Timedelta(minutes=5)) <= pd.Timedelta(seconds=27) for s, at in live)
    assert feed.late_polls >= 6


def test_last_bar_close():
    from mltrade.feeds.sessions import last_bar_close

    at = lambda s: pd.Timestamp(s, tz=NY)  # noqa: E731
    assert last_bar_close(at("2024-03-08 15:07"), "XNAS", 5) == at("2024-03-08 15:05")
    assert last_bar_close(at("2024-03-11 09:32"), "XNAS", 5) == at("2024-03-08 16:00")
