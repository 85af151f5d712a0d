"""Load and write bars as CSV with strict validation.

Every problem is reported with the file, the line number (1-based, header =
line 1) and what was expected, so a user can fix the file by hand.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np
import pandas as pd

from mltrade.io import atomic_write_text  # noqa: F401  (re-export: the I/O helpers live in mltrade.io)

REQUIRED = ("open", "high", "low", "close")
TIME_COLUMNS = ("datetime", "date", "time", "timestamp")


class DataFileError(ValueError):
    """A bars file that does not meet the format; the message names file, line and problem."""


def _fail(path: Path, line: Optional[int], problem: str) -> None:
    where = f"{path}:{line}" if line is not None else f"{path}"
    raise DataFileError(f"{where}: {problem}")


def load_csv(path: Union[str, Path], tz: Optional[str] = None) -> pd.DataFrame:
    """Read bars from CSV: a time column plus open/high/low/close[/volume], case-insensitive.

    Timestamps must carry a UTC offset (``2019-01-02 09:30:00-05:00``) unless
    ``tz`` names the timezone they are in. Rejects unsorted or duplicate
    timestamps, missing values, ``high < low``, non-positive prices.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: no such file")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        _fail(path, None, f"not a readable CSV file ({exc})")
    cols = {c.strip().lower(): c for c in raw.columns}
    tcol = next((cols[c] for c in TIME_COLUMNS if c in cols), None)
    if tcol is None:
        _fail(path, 1, f"expected a time column named one of {list(TIME_COLUMNS)}, got {list(raw.columns)}")
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        _fail(path, 1, f"missing column(s) {missing}; expected {list(REQUIRED)} (+ optional volume)")
    lines = np.arange(len(raw)) + 2
    # timestamps
    text = raw[tcol].str.strip()
    empty = text == ""
    if empty.any():
        _fail(path, int(lines[empty.to_numpy()][0]), f"empty value in column '{tcol}'")
    try:
        parsed = pd.to_datetime(text, utc=False, format="mixed")
    except (ValueError, TypeError):
        bad = None
        for i, v in enumerate(text):
            try:
                pd.Timestamp(v)
            except (ValueError, TypeError):
                bad = i
                break
        _fail(path, int(lines[bad or 0]), f"cannot parse timestamp {text.iloc[bad or 0]!r} in column '{tcol}'")
    if getattr(parsed.dtype, "tz", None) is None:
        if parsed.dtype == object:  # mixed offsets -> convert each to UTC
            try:
                parsed = pd.to_datetime(text, utc=True, format="mixed")
            except (ValueError, TypeError) as exc:
                _fail(path, None, f"inconsistent timestamps in column '{tcol}' ({exc})")
        elif tz is None:
            _fail(path, 2, f"timestamp {text.iloc[0]!r} has no timezone; add a UTC offset or pass tz=")
        else:
            parsed = parsed.dt.tz_localize(tz)
    index = pd.DatetimeIndex(parsed)
    if tz is not None:
        index = index.tz_convert(tz)
    # numbers
    out = {}
    for name in REQUIRED + (("volume",) if "volume" in cols else ()):
        col = raw[cols[name]].str.strip()
        num = pd.to_numeric(col, errors="coerce")
        bad = num.isna() | ~np.isfinite(num)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            _fail(path, int(lines[i]), f"column '{name}': expected a number, got {col.iloc[i]!r}")
        out[name] = num.to_numpy(dtype=float)
    df = pd.DataFrame(out, index=index)
    df.index.name = "datetime"
    if "volume" not in df:
        df["volume"] = 0.0
    nonpos = (df[list(REQUIRED)] <= 0).any(axis=1).to_numpy()
    if nonpos.any():
        i = int(np.flatnonzero(nonpos)[0])
        _fail(path, int(lines[i]), "prices must be positive")
    if (df["volume"] < 0).any():
        i = int(np.flatnonzero((df["volume"] < 0).to_numpy())[0])
        _fail(path, int(lines[i]), "volume must not be negative")
    hl = (df["high"] < df["low"]).to_numpy()
    if hl.any():
        i = int(np.flatnonzero(hl)[0])
        _fail(path, int(lines[i]), f"high {df['high'].iloc[i]} is below low {df['low'].iloc[i]}")
    outside = ((df["open"] > df["high"]) | (df["open"] < df["low"]) | (df["close"] > df["high"])
               | (df["close"] < df["low"])).to_numpy()
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        _fail(path, int(lines[i]), "open and close must lie between low and high")
    t = df.index.asi8
    if len(t) > 1:
        d = np.diff(t)
        if (d == 0).any():
            i = int(np.flatnonzero(d == 0)[0]) + 1
            _fail(path, int(lines[i]), f"duplicate timestamp {df.index[i]}")
        if (d < 0).any():
            i = int(np.flatnonzero(d < 0)[0]) + 1
            _fail(path, int(lines[i]), f"timestamps not sorted ascending: {df.index[i]} after {df.index[i - 1]}")
    df.attrs.update(source=str(path), synthetic_intraday=False)
    return df


def write_csv(df: pd.DataFrame, path: Union[str, Path]) -> None:
    """Write bars as CSV (ISO timestamps with offset), atomically."""
    out = df[[c for c in ("open", "high", "low", "close", "volume") if c in df]].copy()
    out.index = out.index.strftime("%Y-%m-%dT%H:%M:%S%z")
    out.index.name = "datetime"
    atomic_write_text(path, out.to_csv(float_format="%.6f"))
