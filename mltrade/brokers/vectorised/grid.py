"""Bars laid out by session and bar number, with the look-ups the kernel walks (first touch of a level)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Tuple

import numpy as np
import pandas as pd

from mltrade.calendars import tag_bars, timezone_of
from mltrade.feeds.bars import datetime_to_num


@dataclass
class SessionGrid:
    """Bars laid out as ``(n_sessions, bars_per_session)`` arrays (NaN where a bar is absent)."""

    sessions: pd.DatetimeIndex      #: session dates
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    first: np.ndarray               #: first present bar number per session
    last: np.ndarray                #: last present bar number (the exit bar) per session
    day: np.ndarray                 #: UTC day number of each session (financing)
    times: np.ndarray               #: bar start times (datetime64[ns], UTC), NaT where absent
    tz: str
    _tables: Dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def n_sessions(self) -> int:
        """Number of sessions (rows)."""
        return len(self.sessions)

    @property
    def width(self) -> int:
        """Bars per session (columns, the longest session)."""
        return self.open.shape[1]

    def subset(self, start: int, stop: int) -> "SessionGrid":
        """Sessions ``[start, stop)`` as a grid of their own (a separate run)."""
        sl = slice(start, stop)
        return SessionGrid(self.sessions[sl], self.open[sl], self.high[sl], self.low[sl], self.close[sl],
                           self.first[sl], self.last[sl], self.day[sl], self.times[sl], self.tz)

    def touch_tables(self, which: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Next-lower-extreme chains of every session, with binary-lifting jumps (built once, cached).

        ``val[s, j]``: the adverse extreme of bar ``j`` (low for ``long``, -high for
        ``short``; +inf where absent; a sentinel column ``width`` = -inf).
        ``up[k, s, j]``: the bar ``2**k`` steps along the chain of strictly lower
        ``val`` after ``j`` (the running extreme's new records), ``width`` if none.
        ``lowest[s, j]``: the lowest ``val`` from bar ``j`` to the session's end.
        """
        if which not in self._tables:
            a = self.low if which == "long" else -self.high
            n_s, w = a.shape
            val = np.full((n_s, w + 1), -np.inf)
            val[:, :w] = np.where(np.isnan(a), np.inf, a)
            nxt = np.full((n_s, w + 1), w, dtype=np.int64)
            for j in range(w - 1):
                lower = val[:, j + 1:w] < val[:, j:j + 1]
                nxt[:, j] = np.where(lower.any(axis=1), lower.argmax(axis=1) + j + 1, w)
            # the longest chain bounds the jumps needed: 2**levels > its length
            depth = np.zeros((n_s, w + 1), dtype=np.int64)
            rows = np.arange(n_s)
            for j in range(w - 1, -1, -1):
                depth[:, j] = 1 + depth[rows, nxt[:, j]]
            levels = [nxt]
            while (1 << len(levels)) <= int(depth.max()):
                prev = levels[-1]
                levels.append(np.take_along_axis(prev, prev, axis=1))
            lowest = np.full((n_s, w + 1), np.inf)
            lowest[:, :w] = np.minimum.accumulate(val[:, :w][:, ::-1], axis=1)[:, ::-1]
            self._tables[which] = (val, np.stack(levels), lowest)
        return self._tables[which]

    def first_touch(self, sess: np.ndarray, direction: np.ndarray, start: np.ndarray,
                    threshold: np.ndarray) -> np.ndarray:
        """First bar ``j >= start`` of session ``sess`` whose adverse extreme (signed) is ``<= threshold``.

        Per certificate (1-D arrays): long looks at lows, short at -highs. Returns
        ``width`` where no bar of the session reaches the threshold (one look-up of
        the session's lowest extreme after ``start``); otherwise a walk along the
        session's running-extreme records: O(log width) per certificate.
        """
        out = np.full(len(sess), self.width, dtype=np.int64)
        for which, mask in (("long", direction > 0), ("short", direction < 0)):
            val, up, lowest = self.touch_tables(which)
            w1 = val.shape[1]
            flat_val, flat_up = val.reshape(-1), up.reshape(up.shape[0], -1)
            idx = np.flatnonzero(mask)
            pos = sess[idx] * w1 + start[idx]
            reach = lowest.reshape(-1)[pos] <= threshold[idx]
            idx, pos = idx[reach], pos[reach]
            if not len(idx):
                continue
            base = pos - start[idx]
            cur = start[idx].astype(np.int64)
            thr = threshold[idx]
            hit_now = flat_val[pos] <= thr
            for k in range(up.shape[0] - 1, -1, -1):
                nx = flat_up[k][base + cur]
                cur = np.where(flat_val[base + nx] > thr, nx, cur)   # still above: jump along the chain
            out[idx] = np.where(hit_now, start[idx], flat_up[0][base + cur])
        return out


def session_grid(bars: pd.DataFrame, exchange: str = "XNAS", interval: int = 5) -> SessionGrid:
    """Lay out intraday bars by session and bar number (the numbers ``IndexData`` tags them with).

    Sessions must be complete and without missing bars, except that the first
    session may start late and the last may end early (as a data span cut mid-session).
    """
    idx = _bar_index(bars, exchange)
    tags = tag_bars(idx, exchange, int(interval))
    if not tags.in_session.all():
        bad = int(np.flatnonzero(~tags.in_session)[0])
        raise ValueError(f"bars: row {bad} ({idx[bad]}) lies outside every {exchange} session")
    sess = tags.session
    change = np.r_[True, sess[1:] != sess[:-1]]
    sid = np.cumsum(change) - 1
    starts = np.flatnonzero(change)
    ends = np.r_[starts[1:], len(sess)] - 1
    col = tags.bar.astype(int)
    _check_sessions(idx, sess, change, starts, ends, col, tags.left.astype(int))
    n_s = len(starts)
    width = int(col.max()) + 1
    grid = {}
    for name in ("open", "high", "low", "close"):
        g = np.full((n_s, width), np.nan)
        g[sid, col] = bars[name].to_numpy(dtype=float)
        grid[name] = g
    times = np.full((n_s, width), np.datetime64("NaT"), dtype="datetime64[ns]")
    times[sid, col] = idx.tz_convert("UTC").tz_localize(None).to_numpy(dtype="datetime64[ns]")
    days = utc_day_numbers(idx)
    if (days[starts] != days[ends]).any():
        s = int(np.flatnonzero(days[starts] != days[ends])[0])
        raise ValueError(f"bars: session {sess[starts[s]]} spans two UTC days; not supported by the evaluator")
    return SessionGrid(pd.DatetimeIndex(sess[starts]), grid["open"], grid["high"], grid["low"], grid["close"],
                       col[starts], col[ends], days[starts], times, str(idx.tz))


def _bar_index(bars: pd.DataFrame, exchange: str) -> pd.DatetimeIndex:
    """The bars' start times in the exchange's time zone (checked: OHLC columns, increasing timestamps)."""
    missing = {"open", "high", "low", "close"} - set(bars.columns)
    if missing:
        raise ValueError(f"bars: missing columns {sorted(missing)}; expected open, high, low, close")
    if len(bars) == 0:
        raise ValueError("bars: expected at least one bar")
    idx = bars.index
    if not isinstance(idx, pd.DatetimeIndex):
        raise ValueError("bars: expected a DatetimeIndex of bar start times")
    if idx.tz is None:
        idx = idx.tz_localize(timezone_of(exchange))
    if not (idx.is_monotonic_increasing and idx.is_unique):
        raise ValueError("bars: timestamps must be strictly increasing")
    return idx


def _check_sessions(idx, sess, change, starts, ends, col, left) -> None:
    """Gap-free sessions; only the first may start late and only the last may end early."""
    step_ok = np.r_[True, (col[1:] == col[:-1] + 1) | change[1:]]
    if not step_ok.all():
        bad = int(np.flatnonzero(~step_ok)[0])
        raise ValueError(f"bars: session {sess[bad]} has missing bars before row {bad} ({idx[bad]}): "
                         f"bar number {col[bad]} follows {col[bad - 1]}; the evaluator needs gap-free sessions")
    if len(starts) > 1 and col[starts[1:]].any():
        s = int(np.flatnonzero(col[starts[1:]] != 0)[0]) + 1
        raise ValueError(f"bars: session {sess[starts[s]]} starts at bar {col[starts[s]]}, expected bar 0 "
                         f"(only the first session may start late)")
    if len(ends) > 1 and left[ends[:-1]].any():
        s = int(np.flatnonzero(left[ends[:-1]] != 0)[0])
        raise ValueError(f"bars: session {sess[ends[s]]} ends {left[ends[s]]} bars before its close "
                         f"(only the last session may end early)")


def utc_day_numbers(index: pd.DatetimeIndex) -> np.ndarray:
    """UTC calendar day numbers of bar times, as ``KnockoutBroker`` counts financing days."""
    return np.floor(datetime_to_num(index) + 1e-9).astype(np.int64)
