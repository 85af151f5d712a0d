"""Sessions by the exchange calendar: the feeds a live run replays or follows, and its checkpoints.

:class:`ReplayData` replays bars (``--feed sample``: the embedded sample) bar by bar on a fast clock
(``speed`` times real time, 0 = no waiting), so a whole live loop runs offline; :func:`sample_feed`
builds it for the next sessions, :func:`twelvedata_feed` waits for the next open and follows the live
TwelveData feed. :class:`SessionCheckpoint` writes each finished session to the journal's state, so a
restart resumes with the next session. The run itself is :func:`mltrade.live.runner.run_live`.
"""
from __future__ import annotations

import logging
import time as _time
from datetime import datetime, timezone
from typing import Any, Callable, List, Optional

import backtrader as bt
import pandas as pd

from mltrade.calendars import sessions
from mltrade.feeds.bars import IndexData

log = logging.getLogger("mltrade.live")


class ReplayData(IndexData):
    """``IndexData`` delivered bar by bar on a clock (``speed`` × real time; 0 = as fast as possible)."""

    params = (("speed", 0.0), ("sleep", None), ("on_bar", None))

    def islive(self) -> bool:
        return True

    def is_last_bar(self) -> bool:
        """True on the last bar the replay will deliver."""
        return self._pos >= len(self._rows)

    def _load(self) -> bool:
        if self._pos >= len(self._rows):
            return False
        if self.p.speed and self._pos > 0:
            (self.p.sleep or _time.sleep)(float(self.p.interval or 1440) * 60.0 / float(self.p.speed))
        ok = super()._load()
        if ok and self.p.on_bar is not None:
            self.p.on_bar(self)
        return ok


class SessionCheckpoint(bt.Analyzer):
    """Writes each completed session to the journal state (``key``, see
    :func:`~mltrade.live.journal.cursor_key`) after the strategy saw it."""

    params = (("journal", None), ("key", "last_session"))

    def start(self) -> None:
        self.done: List[str] = []

    def next(self) -> None:
        d = self.strategy.data
        if int(d.session_left[0]) == 0:
            day = d.datetime.date(0).isoformat()
            if not self.done or self.done[-1] != day:
                self.done.append(day)
                if self.p.journal is not None:
                    self.p.journal.set_state(self.p.key, day)
                log.info("session %s finished", day)


def next_sessions(calendar: str, after: Optional[str], first: str, n: int) -> pd.DataFrame:
    """The next ``n`` sessions (UTC open/close) on or after ``first`` and strictly after ``after``."""
    start = pd.Timestamp(first)
    if after:
        start = max(start, pd.Timestamp(after) + pd.Timedelta(days=1))
    sched = sessions(calendar, start, start + pd.Timedelta(days=10 + 2 * n))
    return sched.iloc[:n]


def wait_until_open(calendar: str, now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                    sleep: Callable[[float], None] = _time.sleep, lead_s: float = 60.0) -> pd.Timestamp:
    """Sleep until ``lead_s`` before the next session opens (returns its UTC open; no wait if open now)."""
    t = pd.Timestamp(now())
    sched = sessions(calendar, t.tz_convert(None).normalize() - pd.Timedelta(days=1),
                     t.tz_convert(None).normalize() + pd.Timedelta(days=10))
    for _, row in sched.iterrows():
        if row["close"] > t:
            wait = (row["open"] - t).total_seconds() - lead_s
            if wait > 0:
                log.info("next session opens %s; sleeping %.0f s", row["open"], wait)
                sleep(wait)
            return row["open"]
    raise RuntimeError(f"calendar {calendar}: no session in the next 10 days")



def sample_feed(cfg: dict, last: Optional[str], max_sessions: int, speed: Optional[float],
                on_bar: Optional[Callable[[Any], None]]) -> tuple:
    """The replayed sample for the next ``max_sessions`` sessions after ``last`` (from ``[live]
    replay_start``): a :class:`ReplayData` and its days."""
    from mltrade.feeds.sample import load_daily, sample_intraday

    lv = cfg["live"]
    exchange = cfg.get("backtest", {}).get("exchange", "XNAS")
    interval = int(cfg.get("backtest", {}).get("interval", 5))
    todo = next_sessions(exchange, last, lv["replay_start"], max_sessions)
    sample_end = load_daily().index[-1]
    todo = todo[todo.index <= sample_end]
    if todo.empty:
        if not last:
            raise ValueError(f"live.replay_start: expected a date up to the replayed sample's end "
                             f"{sample_end.date()}, got {lv['replay_start']}")
        raise ValueError(f"live.replay_start: the replayed sample ends {sample_end.date()} and the "
                         f"journal {lv['journal_path']} has traded up to {last}: point [live] journal_path "
                         f"at a new file to replay it again")
    if len(todo) < max_sessions:
        log.warning("the replayed sample ends %s: %d of the %d sessions asked for are left",
                    sample_end.date(), len(todo), max_sessions)
    days = [d.date().isoformat() for d in todo.index]
    bars = sample_intraday(days[0], days[-1], seed=int(cfg.get("backtest", {}).get("seed", 42)),
                           interval=interval)
    data = ReplayData(dataframe=bars, exchange=exchange, interval=interval,
                      speed=lv["replay_speed"] if speed is None else speed, on_bar=on_bar)
    return data, days


def twelvedata_feed(cfg: dict, last: Optional[str], max_sessions: int, interval: int,
                    clock: Optional[Callable[[], Any]], sleep: Optional[Callable[[float], None]],
                    feed_kwargs: dict) -> tuple:
    """The live TwelveData feed for the next ``max_sessions`` sessions (waits for the next open)."""
    from mltrade.calendars import calendar_for_symbol, timezone_of
    from mltrade.feeds.twelvedata import client_from_config
    from mltrade.feeds.twelvedata_feed import TwelveDataFeed

    lv = cfg["live"]
    exchange = calendar_for_symbol(lv["symbol"])
    kw = dict(feed_kwargs)
    kw.setdefault("poll_delay", float(cfg.get("twelvedata", {}).get("poll_delay", 2.0)))
    client = kw.pop("client", None) or client_from_config(cfg)     # fails early without an API key
    now = clock or (lambda: pd.Timestamp.now(tz="UTC"))
    opened = wait_until_open(exchange, now=now, sleep=sleep or _time.sleep)
    first = opened.tz_convert(timezone_of(exchange)).date().isoformat()
    todo = next_sessions(exchange, last, first, max_sessions)
    feed = TwelveDataFeed(symbol=lv["symbol"], td_interval=f"{interval}min", live=True, client=client,
                          clock=clock, sleep=sleep, start=todo["open"].iloc[0],
                          live_until=todo["close"].iloc[-1]
                          + pd.Timedelta(seconds=float(lv["close_grace_s"])),
                          **kw)
    return feed, [d.date().isoformat() for d in todo.index]
