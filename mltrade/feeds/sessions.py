"""Session timing helpers for live feeds, on top of :mod:`mltrade.calendars` (exchange_calendars).

Bars are aligned to the session open: bar ``k`` spans ``open + k*interval`` to
``open + (k+1)*interval`` (the last bar of an early close ends at the close).
"""
from __future__ import annotations


import numpy as np
import pandas as pd

from mltrade.calendars import sessions, timezone_of


def _utc(t) -> pd.Timestamp:
    ts = pd.Timestamp(t)
    if ts.tz is None:
        raise ValueError(f"time: expected a timezone-aware timestamp, got {t!r}")
    return ts.tz_convert("UTC")


def _schedule_around(now: pd.Timestamp, calendar: str, days_before: int = 7,
                     days_after: int = 14) -> pd.DataFrame:
    local = now.tz_convert(timezone_of(calendar)).tz_localize(None).normalize()
    return sessions(calendar, local - pd.Timedelta(days=days_before), local + pd.Timedelta(days=days_after))


def next_bar_close(now, calendar: str, interval_minutes: int) -> pd.Timestamp:
    """UTC time at which the next bar completes after ``now`` (skips nights, weekends, holidays)."""
    now = _utc(now)
    step = pd.Timedelta(minutes=interval_minutes)
    sched = _schedule_around(now, calendar)
    for o, c in zip(sched["open"], sched["close"]):
        o, c = pd.Timestamp(o), pd.Timestamp(c)
        o = o.tz_localize("UTC") if o.tz is None else o.tz_convert("UTC")
        c = c.tz_localize("UTC") if c.tz is None else c.tz_convert("UTC")
        if now >= c:
            continue
        if now < o:
            return min(o + step, c)
        k = int((now - o) // step) + 1
        return min(o + k * step, c)
    raise ValueError(f"no {calendar} session within two weeks after {now}")


def last_bar_close(now, calendar: str, interval_minutes: int) -> pd.Timestamp:
    """UTC end of the latest bar that completed at or before ``now`` (a session close counts)."""
    now = _utc(now)
    step = pd.Timedelta(minutes=interval_minutes)
    sched = _schedule_around(now, calendar, days_before=14, days_after=1)
    for o, c in zip(reversed(list(sched["open"])), reversed(list(sched["close"]))):
        o, c = pd.Timestamp(o).tz_convert("UTC"), pd.Timestamp(c).tz_convert("UTC")
        if now >= c:
            return c
        if now >= o + step:
            return o + int((now - o) // step) * step
    raise ValueError(f"no {calendar} bar completed in the two weeks before {now}")


def last_session_open(now, calendar: str) -> pd.Timestamp:
    """UTC open of the latest session that opened at or before ``now``."""
    now = _utc(now)
    sched = _schedule_around(now, calendar, days_before=14, days_after=1)
    opens = pd.DatetimeIndex(sched["open"])
    opens = opens.tz_localize("UTC") if opens.tz is None else opens.tz_convert("UTC")
    before = opens[opens <= now]
    if len(before) == 0:
        raise ValueError(f"no {calendar} session opened in the two weeks before {now}")
    return before[-1]


def in_session(now, calendar: str) -> bool:
    """Whether ``now`` lies inside a regular session."""
    now = _utc(now)
    sched = _schedule_around(now, calendar, 3, 3)
    o = pd.DatetimeIndex(sched["open"]).tz_convert("UTC") if len(sched) else pd.DatetimeIndex([], tz="UTC")
    c = pd.DatetimeIndex(sched["close"]).tz_convert("UTC") if len(sched) else o
    return bool(np.any((o <= now) & (now < c)))


__all__ = ["next_bar_close", "last_bar_close", "last_session_open", "in_session"]
