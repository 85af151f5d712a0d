"""Backtrader feed over a bars DataFrame, tagged with each bar's place in its session.

``IndexData`` replaces ``bt.feeds.PandasData`` (slow per-row conversion and
weak timezone handling on pandas 3): the whole frame is converted to arrays
once, timestamps are stored as UTC and shown in the exchange's timezone, and
two extra lines tell strategies where they are in the trading session.
"""
from __future__ import annotations

from typing import Optional

import backtrader as bt
import numpy as np
import pandas as pd
import pytz

from mltrade.calendars import tag_bars, timezone_of

_UNIX_ORDINAL = 719163.0  # datetime.date(1970, 1, 1).toordinal(), backtrader's date2num of the Unix epoch


def datetime_to_num(index: pd.DatetimeIndex) -> np.ndarray:
    """Vectorised ``backtrader.date2num`` for a tz-aware index (values in UTC)."""
    ns = index.tz_convert("UTC").tz_localize(None).to_numpy(dtype="datetime64[ns]").astype("int64")
    return _UNIX_ORDINAL + ns / 86_400e9


def num_to_utc(num: float) -> pd.Timestamp:
    """Inverse of :func:`datetime_to_num` for one value."""
    return pd.Timestamp(int(round((num - _UNIX_ORDINAL) * 86_400e3)), unit="ms", tz="UTC")


class IndexData(bt.feed.DataBase):
    """Index bars from a DataFrame (tz-aware index of bar start times, lowercase OHLCV columns).

    Extra lines: ``session_bar`` (0-based bar number in the session, -1 outside
    a session) and ``session_left`` (bars left until the session closes, 0 on
    the last bar). Daily frames (``interval=None``) have both at 0.
    """

    lines = ("session_bar", "session_left")
    params = (
        ("dataframe", None),
        ("exchange", "XNAS"),  # exchange calendar code (XNAS, XETR)
        ("interval", 5),  # minutes; None for daily bars
    )

    def __init__(self) -> None:
        df = self.p.dataframe
        if df is None or df.empty:
            raise ValueError("dataframe: expected a non-empty bars DataFrame")
        missing = {"open", "high", "low", "close"} - set(df.columns)
        if missing:
            raise ValueError(f"dataframe: missing columns {sorted(missing)}")
        self.meta = dict(getattr(df, "attrs", {}))
        idx = df.index
        if not isinstance(idx, pd.DatetimeIndex):
            raise ValueError("dataframe: expected a DatetimeIndex")
        if idx.tz is None:
            idx = idx.tz_localize(timezone_of(self.p.exchange))
        self._num = datetime_to_num(idx)
        cols = [df[c].to_numpy(dtype=float) for c in ("open", "high", "low", "close")]
        vol = df["volume"].to_numpy(dtype=float) if "volume" in df else np.zeros(len(df))
        if self.p.interval:
            tags = tag_bars(idx, self.p.exchange, int(self.p.interval))
            sb, sl = tags.bar.astype(float), tags.left.astype(float)
        else:
            sb = sl = np.zeros(len(df))
        self._rows = list(zip(self._num.tolist(), *(c.tolist() for c in cols), vol.tolist(),
                              sb.tolist(), sl.tolist()))
        self._pos = 0
        if self.p.tz is None:
            # shown in the exchange's timezone; backtrader localises through pytz's ``localize``
            self.p.tz = pytz.timezone(timezone_of(self.p.exchange))
        if self.p.interval:
            self.p.timeframe, self.p.compression = bt.TimeFrame.Minutes, int(self.p.interval)
        else:
            self.p.timeframe, self.p.compression = bt.TimeFrame.Days, 1

    def start(self) -> None:
        super().start()
        self._pos = 0

    def _load(self) -> bool:
        if self._pos >= len(self._rows):
            return False
        r = self._rows[self._pos]
        self._pos += 1
        ln = self.lines
        ln.datetime[0], ln.open[0], ln.high[0], ln.low[0], ln.close[0], ln.volume[0] = r[:6]
        ln.openinterest[0] = 0.0
        ln.session_bar[0], ln.session_left[0] = r[6], r[7]
        return True

    def utc(self, ago: int = 0) -> pd.Timestamp:
        """UTC timestamp of the bar ``ago`` bars back."""
        return num_to_utc(self.lines.datetime[-ago])

    @property
    def synthetic(self) -> bool:
        return bool(self.meta.get("synthetic_intraday", False))
