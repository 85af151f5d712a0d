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


_OFFSET = r"(?:Z|[+-]\d\d:?\d\d)$"


def _parse_times(text: pd.Series, path: Path, lines: np.ndarray, tcol: str,
                 tz: Optional[str]) -> pd.DatetimeIndex:
    """Timestamps of ``text`` as a tz-aware index (see :func:`load_csv`)."""
    parsed, mixed, fmt = None, False, "ISO8601"
    for fmt in ("ISO8601", "mixed"):  # ISO 8601 quickly; any layout pandas reads, element by element
        try:
            parsed = pd.to_datetime(text, utc=False, format=fmt)
            mixed = parsed.dtype == object  # pandas 2: mixed UTC offsets come back as objects
        except (ValueError, TypeError):
            # pandas 3 raises on mixed UTC offsets (any local-time file spanning a DST change)
            try:
                parsed, mixed = pd.to_datetime(text, utc=True, format=fmt), True
            except (ValueError, TypeError):
                continue
        break
    if parsed is None:
        bad = 0
        for i, v in enumerate(text):
            try:
                pd.Timestamp(v)
            except (ValueError, TypeError):
                bad = i
                break
        _fail(path, int(lines[bad]), f"cannot parse timestamp {text.iloc[bad]!r} in column '{tcol}'")
    if mixed:
        if parsed.dtype == object:
            parsed = pd.to_datetime(text, utc=True, format=fmt)
        has_offset = text.str.contains(_OFFSET, regex=True).to_numpy()
        if not has_offset.all():
            i = int(np.flatnonzero(~has_offset)[0])
            _fail(path, int(lines[i]), f"timestamp {text.iloc[i]!r} has no UTC offset while others have "
                                       f"one; give every timestamp an offset (e.g. -05:00)")
        index = pd.DatetimeIndex(parsed)
        if tz is not None:
            return index.tz_convert(tz)
        local = pd.DatetimeIndex(pd.to_datetime(text.str.replace(_OFFSET, "", regex=True), format=fmt))
        return index.tz_convert(_zone_of(index, local - index.tz_localize(None)))
    if getattr(parsed.dtype, "tz", None) is None:
        if tz is None:
            _fail(path, 2, f"timestamp {text.iloc[0]!r} has no timezone; add a UTC offset or pass tz=")
        parsed = parsed.dt.tz_localize(tz)
    index = pd.DatetimeIndex(parsed)
    return index.tz_convert(tz) if tz is not None else index


def _zone_of(index_utc: pd.DatetimeIndex, offsets: pd.TimedeltaIndex) -> str:
    """The timezone whose UTC offset at every instant of ``index_utc`` equals ``offsets`` (the
    exchanges' zones first, then every IANA zone); ``"UTC"`` when none does."""
    import zoneinfo

    from mltrade.calendars import CALENDAR_TZ

    off = offsets.to_numpy()
    # the rows where the offset changes (and the row before each) decide; the full check confirms
    change = np.flatnonzero(off[1:] != off[:-1])
    probe = np.unique(np.r_[0, change, change + 1, len(off) - 1])
    naive = index_utc.tz_localize(None)
    zones = list(dict.fromkeys(list(CALENDAR_TZ.values()) + sorted(zoneinfo.available_timezones())))

    def fits(zone: str, rows) -> bool:
        sub = index_utc[rows]
        return bool(((sub.tz_convert(zone).tz_localize(None) - naive[rows]).to_numpy() == off[rows]).all())

    for zone in zones:
        try:
            if fits(zone, probe) and fits(zone, slice(None)):
                return zone
        except (KeyError, ValueError):  # a zone this tz database cannot load
            continue
    return "UTC"


def load_csv(path: Union[str, Path], tz: Optional[str] = None) -> pd.DataFrame:
    """Read bars from CSV: a time column plus open/high/low/close[/volume], case-insensitive.

    Timestamps must carry a UTC offset (``2019-01-02 09:30:00-05:00``) unless
    ``tz`` names the timezone they are in. Offsets may change within the file
    (local time across DST changes): the index is then in the timezone whose
    offsets match every row (e.g. ``America/New_York``), else in UTC. Rejects unsorted or duplicate
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
    index = _parse_times(text, path, lines, tcol, tz).as_unit("ns")  # pandas 3 parses to microseconds
    df = pd.DataFrame(_numbers(raw, cols, path, lines), index=index)
    df.index.name = "datetime"
    if "volume" not in df:
        df["volume"] = 0.0
    _check_rows(df, path, lines)
    df.attrs.update(source=str(path), synthetic_intraday=False)
    df.attrs.update(_read_meta(path))
    return df


def _numbers(raw: pd.DataFrame, cols: dict, path: Path, lines: np.ndarray) -> dict:
    """The price (and volume) columns of the raw text as floats; the first bad value fails naming its line."""
    out = {}
    for name in REQUIRED + (("volume",) if "volume" in cols else ()):
        col = raw[cols[name]].str.strip()
        num = pd.to_numeric(col, errors="coerce")
        bad = num.isna() | ~np.isfinite(num)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            _fail(path, int(lines[i]), f"column '{name}': expected a number, got {col.iloc[i]!r}")
        out[name] = num.to_numpy(dtype=float)
    return out


def _check_rows(df: pd.DataFrame, path: Path, lines: np.ndarray) -> None:
    """Fail at the first row with a non-positive price, negative volume, high below low, open or close
    outside the bar, or a duplicate or unsorted timestamp."""
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


def meta_path(path: Union[str, Path]) -> Path:
    """The sidecar ``<file>.meta.json`` that marks a bars file's origin (e.g. synthetic intraday bars)."""
    path = Path(path)
    return path.with_name(path.name + ".meta.json")


def _read_meta(path: Path) -> dict:
    """``synthetic_intraday`` and ``source`` from the sidecar, if there is one."""
    import json

    meta = meta_path(path)
    if not meta.is_file():
        return {}
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFileError(f"{meta}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("synthetic_intraday", False), bool):
        raise DataFileError(f"{meta}: expected {{\"synthetic_intraday\": true|false, \"source\": \"...\"}}")
    out = {"synthetic_intraday": bool(data.get("synthetic_intraday", False))}
    if data.get("source"):
        out["source"] = f"{path} ({data['source']})"
    return out


def _iso_stamps(index: pd.DatetimeIndex) -> np.ndarray:
    """``YYYY-MM-DDTHH:MM:SS[+HHMM]`` of every stamp (the offset in force at it), vectorised."""
    local = index.tz_localize(None) if index.tz is not None else index
    text = np.datetime_as_string(local.to_numpy(dtype="datetime64[s]"), unit="s")
    if index.tz is None:
        return text
    minutes = ((local - index.tz_convert("UTC").tz_localize(None)) // pd.Timedelta(minutes=1)).to_numpy()
    names = {m: f"{'+' if m >= 0 else '-'}{abs(m) // 60:02d}{abs(m) % 60:02d}" for m in np.unique(minutes)}
    return np.char.add(text, np.array([names[m] for m in minutes]) if len(minutes) else text)


def write_csv(df: pd.DataFrame, path: Union[str, Path]) -> None:
    """Write bars as CSV (ISO timestamps with offset, exact prices), atomically; synthetic bars
    (``df.attrs["synthetic_intraday"]``) get the sidecar ``<file>.meta.json`` that marks them."""
    out = df[[c for c in ("open", "high", "low", "close", "volume") if c in df]].copy()
    out.index = pd.Index(_iso_stamps(pd.DatetimeIndex(out.index)), name="datetime")
    # shortest text that reads back to the same float: a CSV round trip changes no price
    atomic_write_text(path, out.to_csv())
    meta = meta_path(path)
    if df.attrs.get("synthetic_intraday"):     # the mark travels with the file: reports still say so
        from mltrade.io import atomic_write_json
        atomic_write_json(meta, {"synthetic_intraday": True, "source": str(df.attrs.get("source", ""))})
    elif meta.is_file():
        meta.unlink()                            # a stale mark of an earlier file at this path
