"""Parquet bar cache: one file per symbol and interval, resumable updates, atomic writes.

The file stores the bars (tz-aware exchange-local index for intraday
intervals) and, in the Parquet schema metadata under ``mltrade``, the list of
time ranges already fetched (``covered``). An update asks the client only for
the parts of ``[start, end)`` not yet covered and saves after every window, so
an interrupted fetch resumes where it stopped and loses nothing. A file that
cannot be read is reported by name and never overwritten.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Tuple, Union

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mltrade.feeds.twelvedata import INTERVALS, _to_local_naive, merge_bars

COLUMNS = ["open", "high", "low", "close", "volume"]
_META_KEY = b"mltrade"
Range = Tuple[pd.Timestamp, pd.Timestamp]


class CacheCorruptError(RuntimeError):
    """The cache file exists but is not a valid bar cache (message names the file)."""


def cache_path(data_dir: Union[str, Path], symbol: str, interval: str) -> Path:
    """``<data_dir>/<SYMBOL>_<interval>.parquet`` (symbol characters outside [A-Za-z0-9.-] become ``-``)."""
    safe = re.sub(r"[^A-Za-z0-9.\-]", "-", symbol.upper())
    return Path(data_dir) / f"{safe}_{interval}.parquet"


def write_atomic(path: Union[str, Path], bars: pd.DataFrame, meta: dict) -> None:
    """Write bars + metadata to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(bars[COLUMNS], preserve_index=True)
    md = dict(table.schema.metadata or {})
    md[_META_KEY] = json.dumps(meta).encode()
    table = table.replace_schema_metadata(md)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_cache(path: Union[str, Path]) -> Tuple[pd.DataFrame, dict]:
    """Read a cache file; raises :class:`CacheCorruptError` naming the file if it is not valid."""
    path = Path(path)
    try:
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {}).get(_META_KEY, b"{}"))
        df = table.to_pandas()
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise CacheCorruptError(f"{path}: not a readable Parquet bar cache ({type(exc).__name__}: {exc}); "
                                f"move or delete the file to fetch again") from None
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing or not isinstance(df.index, pd.DatetimeIndex):
        raise CacheCorruptError(f"{path}: expected a datetime index and columns {COLUMNS}, "
                                f"missing {missing or ['datetime index']}")
    if not df.index.is_monotonic_increasing or df.index.has_duplicates:
        raise CacheCorruptError(f"{path}: bar times are not strictly increasing")
    if not isinstance(meta, dict) or not isinstance(meta.get("covered", []), list):
        raise CacheCorruptError(f"{path}: metadata 'mltrade' is not a JSON object with a 'covered' list")
    return df[COLUMNS], meta


def _merge_ranges(ranges: List[Range]) -> List[Range]:
    out: List[Range] = []
    for s, e in sorted(ranges):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _subtract(want: Range, covered: List[Range]) -> List[Range]:
    s, e = want
    gaps: List[Range] = []
    cur = s
    for cs, ce in _merge_ranges(covered):
        if ce <= cur or cs >= e:
            continue
        if cs > cur:
            gaps.append((cur, min(cs, e)))
        cur = max(cur, ce)
        if cur >= e:
            break
    if cur < e:
        gaps.append((cur, e))
    return gaps


@dataclass
class UpdateResult:
    """What one :meth:`BarCache.update` did."""

    path: Path
    new_bars: int
    total_bars: int
    requests: int
    credits: int
    ranges: List[Range]


class BarCache:
    """Parquet bar cache under ``data_dir`` (one file per symbol and interval)."""

    def __init__(self, data_dir: Union[str, Path]) -> None:
        self.data_dir = Path(data_dir).expanduser()

    def path(self, symbol: str, interval: str) -> Path:
        return cache_path(self.data_dir, symbol, interval)

    def load(self, symbol: str, interval: str, start=None, end=None) -> pd.DataFrame:
        """Cached bars (empty frame if nothing cached), optionally sliced to ``[start, end)``."""
        p = self.path(symbol, interval)
        if not p.exists():
            return pd.DataFrame(columns=COLUMNS, dtype=float)
        df, _ = read_cache(p)
        if start is not None or end is not None:
            tz = df.index.tz
            lo = _bound(start, tz)
            hi = _bound(end, tz)
            mask = np.ones(len(df), dtype=bool)
            if lo is not None:
                mask &= np.asarray(df.index >= lo)
            if hi is not None:
                mask &= np.asarray(df.index < hi)
            df = df[mask]
        return df

    def covered(self, symbol: str, interval: str) -> List[Range]:
        """Ranges (exchange-local, naive) already fetched."""
        p = self.path(symbol, interval)
        if not p.exists():
            return []
        _, meta = read_cache(p)
        return [(pd.Timestamp(s), pd.Timestamp(e)) for s, e in meta.get("covered", [])]

    def missing_ranges(self, symbol: str, interval: str, start, end, tz: str) -> List[Range]:
        """Parts of ``[start, end)`` (exchange-local) not yet fetched."""
        want = (_to_local_naive(start, tz), _to_local_naive(end, tz))
        if want[0] >= want[1]:
            return []
        return _subtract(want, self.covered(symbol, interval))

    def update(self, client, symbol: str, interval: str, start, end=None,
               tz: Optional[str] = None,
               on_window: Optional[Callable[[pd.Timestamp, pd.Timestamp, int], None]] = None,
               settle: pd.Timedelta = pd.Timedelta(days=1)) -> UpdateResult:
        """Fetch the missing parts of ``[start, end)`` with ``client`` and merge them in, window by window.

        Ranges ending less than ``settle`` before now are covered only up to the
        last bar received (the provider may publish recent bars late).
        """
        from mltrade.feeds.twelvedata import _guess_tz

        if interval not in INTERVALS:
            raise ValueError(f"interval: expected one of {list(INTERVALS)}, got {interval!r}")
        tz = tz or _guess_tz(symbol)
        p = self.path(symbol, interval)
        if p.exists():
            bars, meta = read_cache(p)  # raises on a corrupt file before anything is written
        else:
            bars, meta = pd.DataFrame(columns=COLUMNS, dtype=float), {"covered": []}
        covered = [(pd.Timestamp(s), pd.Timestamp(e)) for s, e in meta.get("covered", [])]
        now_l = _to_local_naive(client._now(), tz)
        end_l = min(_to_local_naive(end, tz), now_l) if end is not None else now_l
        step = pd.Timedelta(minutes=INTERVALS[interval]) if INTERVALS[interval] else pd.Timedelta(days=1)
        gaps = _subtract((_to_local_naive(start, tz), end_l), covered)
        req0, cred0 = client.stats.requests, client.stats.credits
        new = 0
        for g_start, g_end in gaps:
            pending = None
            for w_start, w_end, chunk in client.iter_windows(symbol, interval, g_start, g_end, tz=tz):
                if len(chunk):
                    before = len(bars)
                    bars = merge_bars([bars, chunk]) if len(bars) else chunk
                    new += len(bars) - before
                cov_start, cov_end = w_start, w_end
                if w_end > now_l - settle:
                    cov_start, cov_end, pending = _settling_cover(w_start, w_end, chunk, pending, tz, step)
                if cov_end > cov_start:
                    covered = _merge_ranges(covered + [(cov_start, cov_end)])
                meta = {"symbol": symbol, "interval": interval, "tz": tz,
                        "covered": [[s.isoformat(), e.isoformat()] for s, e in covered]}
                write_atomic(p, bars, meta)
                if on_window is not None:
                    on_window(w_start, w_end, len(chunk))
        return UpdateResult(path=p, new_bars=new, total_bars=len(bars),
                            requests=client.stats.requests - req0, credits=client.stats.credits - cred0,
                            ranges=gaps)


def _settling_cover(w_start: pd.Timestamp, w_end: pd.Timestamp, chunk: pd.DataFrame,
                    pending: Optional[pd.Timestamp], tz: str,
                    step: pd.Timedelta) -> Tuple[pd.Timestamp, pd.Timestamp, Optional[pd.Timestamp]]:
    """``(cover start, cover end, pending)`` of a window that ends within the settling time.

    Recent data may not be published yet (or still forming): cover only up to the end of the last bar
    received, so the next update asks again from there; bars arrive in order, so empty windows before
    a received bar are truly empty. ``pending``: where the uncovered stretch began (None: nothing open).
    """
    cov_start = pending if pending is not None else w_start
    if len(chunk):
        last = chunk.index[-1]
        if last.tz is not None:
            last = last.tz_convert(tz).tz_localize(None)
        cov_end = min(w_end, last + step)
        pending = cov_end if cov_end < w_end else None
    else:
        cov_end, pending = cov_start, cov_start
    return cov_start, cov_end, pending


def _bound(t, tz) -> Optional[pd.Timestamp]:
    if t is None:
        return None
    ts = pd.Timestamp(t)
    if tz is not None and ts.tz is None:
        return ts.tz_localize(tz)
    if tz is None and ts.tz is not None:
        return ts.tz_localize(None)
    return ts


__all__ = ["BarCache", "CacheCorruptError", "UpdateResult", "cache_path", "read_cache", "write_atomic"]
