"""``TwelveDataFeed``: a backtrader feed of TwelveData bars, historical (from the cache) or live.

Historical mode (``live=False``) reads the Parquet cache written by
``mltrade fetch`` and behaves exactly like :class:`mltrade.feeds.bars.IndexData`
(it is one). Live mode (``live=True``) back-fills from ``start`` (default:
the open of the latest session), then polls once per bar interval, a few
seconds after each bar's close (``poll_delay``), skipping nights, weekends and
holidays of the exchange calendar. Only completed bars are emitted; a failed
poll (network, 5xx, rate limit) marks the feed DISCONNECTED and is retried
after ``reconnect_delay`` seconds; the next successful poll back-fills every
bar missed in between, in order, each exactly once. When the bar that just
closed is not published yet, the feed asks again every ``late_retry`` seconds
(at most ``max_late_retries`` times) instead of waiting a whole interval. The clock and the sleep
function are injectable so tests run on virtual time.
"""
from __future__ import annotations

import collections
import logging
import time
from typing import Callable, Deque, Optional

import backtrader as bt
import numpy as np
import pandas as pd
import pytz

from mltrade.calendars import calendar_for_symbol, tag_bars, timezone_of
from mltrade.feeds.bars import IndexData, datetime_to_num
from mltrade.feeds.cache import BarCache
from mltrade.feeds.sessions import last_bar_close, last_session_open, next_bar_close
from mltrade.feeds.twelvedata import TwelveDataError, interval_minutes

log = logging.getLogger(__name__)


def _utcnow() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


class TwelveDataFeed(IndexData):
    """TwelveData bars for backtrader: ``TwelveDataFeed(symbol="NDX", data_dir=..., live=False)``.

    Lines as :class:`IndexData` (``session_bar``, ``session_left``); ``islive()``
    is ``True`` in live mode. ``exchange`` defaults to the symbol's calendar.
    """

    params = (
        ("symbol", "NDX"),
        ("td_interval", "5min"),        # TwelveData interval name
        ("data_dir", None),             # cache folder (historical mode; default [twelvedata] data_dir)
        ("start", None),                # first bar (exchange-local); live: back-fill from here
        ("end", None),                  # historical: end (exclusive)
        ("live", False),
        ("client", None),               # TwelveDataClient (live mode)
        ("clock", None),                # () -> tz-aware UTC Timestamp (default: client's clock / now)
        ("sleep", None),                # (seconds) -> None (default time.sleep)
        ("poll_delay", 2.0),            # seconds after a bar's close before asking for it
        ("reconnect_delay", 10.0),      # seconds before retrying after a failed poll
        ("late_retry", 5.0),            # seconds before asking again when the bar just closed is missing
        ("max_late_retries", 6),        # then wait for the next bar close
        ("max_wait", 1.0),              # longest single sleep inside _load (keeps cerebro responsive)
        ("live_until", None),           # live: stop (end of data) once the clock passes this time
        ("max_bars", None),             # live: stop after emitting this many bars
    )

    def __init__(self) -> None:
        if self.p.exchange == "XNAS" and self.p.symbol:
            try:
                self.p.exchange = calendar_for_symbol(self.p.symbol)
            except ValueError:
                pass
        minutes = interval_minutes(self.p.td_interval)
        self.p.interval = minutes
        if not self.p.live:
            if self.p.dataframe is None:
                self.p.dataframe = self._read_cache()
            super().__init__()
            return
        if self.p.client is None:
            raise ValueError("client: live mode needs a TwelveDataClient (see mltrade.feeds.twelvedata)")
        if not minutes:
            raise ValueError(f"td_interval: live mode needs an intraday interval, got {self.p.td_interval!r}")
        self.meta = {"symbol": self.p.symbol, "source": "twelvedata-live"}
        self._clock: Callable[[], pd.Timestamp] = self.p.clock or getattr(self.p.client, "_now", _utcnow)
        self._sleep: Callable[[float], None] = self.p.sleep or time.sleep
        self._tzname = timezone_of(self.p.exchange)
        if self.p.tz is None:
            self.p.tz = pytz.timezone(self._tzname)
        self.p.timeframe, self.p.compression = bt.TimeFrame.Minutes, int(minutes)
        self._queue: Deque[tuple] = collections.deque()
        self._rows, self._pos = [], 0
        self.polls = 0
        self.failed_polls = 0
        self.emitted = 0
        self.emitted_at: list = []  # (bar start UTC, clock at emission) for diagnostics
        self._last_bar: Optional[pd.Timestamp] = None
        self._next_poll: Optional[pd.Timestamp] = None
        self._connected = True
        self._late = 0
        self.late_polls = 0

    # ------------------------------------------------------------ historical
    def _read_cache(self) -> pd.DataFrame:
        data_dir = self.p.data_dir
        if data_dir is None:
            from mltrade.config import load_config
            from mltrade.settings import settings_of
            data_dir = settings_of(load_config()).twelvedata.data_dir
        cache = BarCache(data_dir)
        df = cache.load(self.p.symbol, self.p.td_interval, self.p.start, self.p.end)
        if df.empty:
            raise ValueError(f"{cache.path(self.p.symbol, self.p.td_interval)}: no cached bars for "
                             f"{self.p.symbol} {self.p.td_interval} in {self.p.start}..{self.p.end}; run "
                             f"`mltrade fetch --symbol {self.p.symbol} --interval {self.p.td_interval} "
                             f"--start YYYY-MM-DD` first")
        return df

    # ------------------------------------------------------------ live
    def islive(self) -> bool:
        return bool(self.p.live)

    def haslivedata(self) -> bool:
        return bool(self.p.live and self._queue)

    def start(self) -> None:
        super().start()
        if not self.p.live:
            return
        now = self._clock()
        if self.p.start is not None:
            s = pd.Timestamp(self.p.start)
            self._live_from = (s.tz_localize(self._tzname) if s.tz is None else s).tz_convert("UTC")
        else:
            self._live_from = last_session_open(now, self.p.exchange)
        self._next_poll = now  # back-fill at once
        self.put_notification(self.DELAYED)

    def _poll(self, now: pd.Timestamp) -> None:
        step = pd.Timedelta(minutes=int(self.p.interval))
        since = self._live_from if self._last_bar is None else self._last_bar + step
        self.polls += 1
        try:
            bars = self.p.client.time_series(self.p.symbol, self.p.td_interval, since, None,
                                             tz=self._tzname, complete_only=True)
        except TwelveDataError as exc:
            self.failed_polls += 1
            if self._connected:
                self.put_notification(self.DISCONNECTED)
            self._connected = False
            log.warning("%s live poll failed (%s); retry in %.0f s", self.p.symbol, exc,
                        self.p.reconnect_delay)
            self._next_poll = now + pd.Timedelta(seconds=float(self.p.reconnect_delay))
            return
        if not self._connected:
            self.put_notification(self.CONNECTED)
            self._connected = True
        if len(bars):
            idx = bars.index.tz_convert("UTC")
            keep = idx >= since
            # a bar is complete once its end is at or before now (the client already enforces this)
            keep &= np.asarray(idx + step <= now)
            bars = bars[keep]
        if len(bars):
            tags = tag_bars(bars.index, self.p.exchange, int(self.p.interval))
            nums = datetime_to_num(bars.index)
            vals = bars[["open", "high", "low", "close", "volume"]].to_numpy(float)
            for i in range(len(bars)):
                self._queue.append((nums[i], *vals[i], float(tags.bar[i]), float(tags.left[i]),
                                    bars.index[i].tz_convert("UTC")))
            self._last_bar = bars.index[-1].tz_convert("UTC")
        expected = last_bar_close(now, self.p.exchange, int(self.p.interval))
        have = self._last_bar + step if self._last_bar is not None else None
        if (have is None or have < expected) and expected > self._live_from \
                and self._late < int(self.p.max_late_retries):
            # the bar that just closed is not published yet: ask again shortly
            self._late += 1
            self.late_polls += 1
            self._next_poll = now + pd.Timedelta(seconds=float(self.p.late_retry))
            return
        self._late = 0
        nxt = next_bar_close(now, self.p.exchange, int(self.p.interval))
        self._next_poll = nxt + pd.Timedelta(seconds=float(self.p.poll_delay))

    def _emit(self) -> bool:
        r = self._queue.popleft()
        ln = self.lines
        ln.datetime[0], ln.open[0], ln.high[0], ln.low[0], ln.close[0], ln.volume[0] = r[:6]
        ln.openinterest[0] = 0.0
        ln.session_bar[0], ln.session_left[0] = r[6], r[7]
        self.emitted += 1
        self.emitted_at.append((r[8], self._clock()))
        if not self._queue and self._laststatus != self.LIVE and self._connected:
            self.put_notification(self.LIVE)
        return True

    def _done(self, now: pd.Timestamp) -> bool:
        if self.p.max_bars is not None and self.emitted >= int(self.p.max_bars):
            return True
        if self.p.live_until is not None:
            until = pd.Timestamp(self.p.live_until)
            until = until.tz_localize(self._tzname) if until.tz is None else until
            return now >= until
        return False

    def _load(self):
        if not self.p.live:
            return super()._load()
        if self._queue and not (self.p.max_bars is not None and self.emitted >= int(self.p.max_bars)):
            return self._emit()
        now = self._clock()
        if self._done(now):
            return False
        if now >= self._next_poll:
            self._poll(now)
            if self._queue:
                return self._emit()
            return None
        self._sleep(min((self._next_poll - now).total_seconds(), float(self.p.max_wait)))
        return None


__all__ = ["TwelveDataFeed"]
