"""Trading sessions, holidays, early closes and DST from ``exchange_calendars``.

Used by the sample generator, the feeds (to tag every bar with its position in
the session) and the strategies' session helpers. Times are handled in UTC
internally; each exchange has a local timezone for display.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Union

import numpy as np
import pandas as pd

#: symbol -> exchange calendar code
SYMBOL_CALENDARS = {"NDX": "XNAS", "IXIC": "XNAS", "NASDAQ": "XNAS", "QQQ": "XNAS",
                    "GDAXI": "XETR", "DAX": "XETR"}
#: exchange calendar code -> local timezone
CALENDAR_TZ = {"XNAS": "America/New_York", "XNYS": "America/New_York", "XETR": "Europe/Berlin"}

DateLike = Union[str, pd.Timestamp]


def calendar_for_symbol(symbol: str) -> str:
    """Exchange calendar code for an index symbol (``NDX`` → ``XNAS``, ``GDAXI`` → ``XETR``)."""
    key = symbol.upper().split(":")[0]
    if key not in SYMBOL_CALENDARS:
        raise ValueError(f"symbol: no exchange calendar known for {symbol!r}; "
                         f"known: {sorted(SYMBOL_CALENDARS)}")
    return SYMBOL_CALENDARS[key]


def timezone_of(calendar: str) -> str:
    if calendar not in CALENDAR_TZ:
        raise ValueError(f"calendar: expected one of {sorted(CALENDAR_TZ)}, got {calendar!r}")
    return CALENDAR_TZ[calendar]


@lru_cache(maxsize=8)
def _calendar(code: str, start: str, end: str):
    import exchange_calendars as xcals
    return xcals.get_calendar(code, start=start, end=end)


def sessions(calendar: str, start: DateLike, end: DateLike) -> pd.DataFrame:
    """Sessions between ``start`` and ``end`` (inclusive): index = session date, columns open/close (UTC)."""
    start = pd.Timestamp(start).tz_localize(None).normalize()
    end = pd.Timestamp(end).tz_localize(None).normalize()
    cal = _calendar(calendar, "1990-01-01", str(max(end, pd.Timestamp.now().normalize()) .date() + pd.Timedelta(days=400)))
    sched = cal.schedule.loc[start:end, ["open", "close"]]
    return sched.copy()


@dataclass(frozen=True)
class SessionTags:
    """Per-bar position within its session (arrays aligned with the bars)."""

    session: np.ndarray      #: session date (datetime64[D]) of each bar
    bar: np.ndarray          #: 0-based bar number within the session
    left: np.ndarray         #: bars left after this one until the session closes (0 = last bar)
    in_session: np.ndarray   #: False for bars outside any regular session


def tag_bars(index_utc: pd.DatetimeIndex, calendar: str, interval_minutes: int) -> SessionTags:
    """Tag bar start times (UTC) with their session, bar number and bars left (vectorised)."""
    if index_utc.tz is None:
        raise ValueError("index: expected timezone-aware timestamps")
    idx = index_utc.tz_convert("UTC")
    if len(idx) == 0:
        empty = np.array([], dtype=int)
        return SessionTags(np.array([], dtype="datetime64[D]"), empty, empty, np.array([], dtype=bool))
    sched = sessions(calendar, idx[0].tz_convert(timezone_of(calendar)).normalize().tz_localize(None)
                     - pd.Timedelta(days=1), idx[-1].tz_localize(None) + pd.Timedelta(days=1))
    opens = sched["open"].to_numpy(dtype="datetime64[ns]")
    closes = sched["close"].to_numpy(dtype="datetime64[ns]")
    t = idx.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    k = np.searchsorted(opens, t, side="right") - 1
    valid = k >= 0
    kk = np.clip(k, 0, len(opens) - 1)
    step = np.timedelta64(interval_minutes, "m")
    inside = valid & (t >= opens[kk]) & (t < closes[kk])
    bar = ((t - opens[kk]) // step).astype(int)
    nbars = ((closes[kk] - opens[kk] + step - np.timedelta64(1, "ns")) // step).astype(int)
    left = nbars - 1 - bar
    session = sched.index.to_numpy(dtype="datetime64[D]")[kk]
    bar = np.where(inside, bar, -1)
    left = np.where(inside, left, -1)
    return SessionTags(session=session, bar=bar, left=left, in_session=inside)
