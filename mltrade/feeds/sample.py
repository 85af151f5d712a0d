"""Embedded sample data: the real daily NASDAQ Composite 1999–2018 and synthetic 5-minute bars.

The daily rows are real (shipped by the ``arch`` package). The intraday bars
are **synthetic** and built to add no pattern of their own. For each day the
generator draws many Brownian bridges (in log price) from the day's open to
its close, with volatilities spread around the day's *own* volatility (Garman–Klass
from its open, high, low and close: a day far more volatile than its past is not
drawn too calm), and each bar's high and low from the law of a Brownian bridge's
extremes. Each candidate also counts read backwards (an equally likely
bridge). It keeps the candidate whose high and low come closest to the day's
real high and low, then stretches the parts beyond the open–close band so they
meet them exactly. Every day therefore matches its real OHLC exactly (first
open, highest high, lowest low, last close); fed daily bars cut from a
Brownian motion, the generator returns bars that look like the Brownian paths
they came from (see :mod:`mltrade.feeds.artefacts` and ``docs/data.md``).
Volume is the day's real volume spread in a U shape. Sessions and early
closes come from the XNAS exchange calendar. Each day draws from its own
random stream (seed, generator version, date). ``df.attrs["synthetic_intraday"]``
is ``True`` and every report that uses the data says so.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import pandas as pd

from mltrade.calendars import sessions, timezone_of

SAMPLE_CALENDAR = "XNAS"
SAMPLE_SYMBOL = "IXIC"
SAMPLE_SOURCE = "NASDAQ Composite daily 1999-2018 (arch.data.nasdaq), synthetic 5-minute bars"

#: Bumped whenever the generator's output changes (part of every random stream and of the cache key).
GENERATOR_VERSION = 3
#: Candidate bridges drawn per day; the one whose extremes come closest to the day's high/low is kept.
CANDIDATES = 128
#: Spread (log-normal sigma) of the candidates' volatilities around the day's own volatility.
SIGMA_SPREAD = 0.3
#: Floor of a day's Garman-Klass variance, as a share of its Parkinson variance.
VOL_FLOOR = 0.25
#: Parkinson's constant: E[(ln H/L)^2] = 4 ln 2 * sigma^2 for a driftless Brownian motion.
_PARKINSON = float(np.sqrt(4.0 * np.log(2.0)))
_CHUNK_ELEMENTS = 3_000_000  # candidate array size per vectorised block (float32: ~12 MB per array)
_COLUMNS = ["open", "high", "low", "close", "volume"]

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _load_daily_cached() -> pd.DataFrame:
    from arch.data import nasdaq

    raw = nasdaq.load()
    df = raw.rename(columns=str.lower)[["open", "high", "low", "close", "volume"]].astype(float)
    df.index = pd.DatetimeIndex(df.index).tz_localize(None).normalize()
    df.index.name = "date"
    # The source has a handful of rows where open/close fall outside high/low by rounding:
    # widen high/low so every row is a valid OHLC bar.
    df["high"] = df[["open", "high", "low", "close"]].max(axis=1)
    df["low"] = df[["open", "high", "low", "close"]].min(axis=1)
    return df


def load_daily(start: Optional[str] = None, end: Optional[str] = None) -> pd.DataFrame:
    """Real daily NASDAQ Composite bars (columns open/high/low/close/volume, naive date index)."""
    df = _load_daily_cached().loc[start:end].copy()
    df.attrs.update(symbol=SAMPLE_SYMBOL, source="arch.data.nasdaq", synthetic_intraday=False)
    return df


def _u_shape(n: int) -> np.ndarray:
    x = np.linspace(-1.0, 1.0, n)
    w = 0.35 + 1.6 * x ** 2
    w[-1] *= 1.8  # closing auction
    w[0] *= 1.4   # opening cross
    return w / w.sum()


def _check_daily(daily: pd.DataFrame) -> None:
    missing = [c for c in ("open", "high", "low", "close") if c not in daily.columns]
    if missing:
        raise ValueError(f"daily: missing column(s) {missing}; expected open/high/low/close[/volume]")
    v = daily[["open", "high", "low", "close"]].to_numpy(dtype=float)
    bad = ~np.isfinite(v).all(axis=1) | (v <= 0).any(axis=1)
    o, h, lo, c = v.T
    bad |= (h < np.maximum(o, c)) | (lo > np.minimum(o, c))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"daily: row {daily.index[i]}: expected positive prices with low <= open, close <= high, "
                         f"got open={o[i]} high={h[i]} low={lo[i]} close={c[i]}")


def _day_streams(seed: int, ordinals: np.ndarray):
    """One independent random generator per day, keyed by (seed, generator version, date)."""
    for d in ordinals:
        yield np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), GENERATOR_VERSION, int(d)])))


def day_volatility(daily: pd.DataFrame) -> np.ndarray:
    """Each day's own volatility (log units, whole session) from its open, high, low and close:
    Garman–Klass, 0.5 ln(H/L)² − (2 ln 2 − 1) ln(C/O)², floored at a quarter of Parkinson's
    ln(H/L)² / (4 ln 2) (a day that runs from one extreme to the other)."""
    o, h, lo, c = (daily[k].to_numpy(dtype=float) for k in ("open", "high", "low", "close"))
    width, move = np.log(h / lo), np.log(c / o)
    gk = 0.5 * width ** 2 - (2.0 * np.log(2.0) - 1.0) * move ** 2
    park = (width / _PARKINSON) ** 2
    var = np.maximum(gk, VOL_FLOOR * park)
    return np.sqrt(np.maximum(var, 1e-16))


def _bridge_block(z: np.ndarray, e_hi: np.ndarray, e_lo: np.ndarray, u: np.ndarray, sig: np.ndarray,
                  d: np.ndarray, hr: np.ndarray, lr: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best-fitting candidate path per day, stretched to the day's extremes (log price relative to the open).

    ``z``/``e_hi``/``e_lo``: (days, K, n) normal / exponential draws; ``u``: (days, K) normal draws for
    the candidates' volatilities around the day's volatility ``sig`` (days,); ``d``, ``hr``, ``lr``: (days,) log
    close, high and low over the open. Returns points (days, n+1) and bar highs/lows (days, n).
    """
    m, k, n = z.shape
    f32 = np.float32
    s_step = ((sig[:, None] * np.exp(SIGMA_SPREAD * u)) / np.sqrt(n)).astype(f32)     # (m, K) per-bar sd
    walk = np.cumsum(z * s_step[:, :, None], axis=2)                                   # points 1..n
    t = (np.arange(1, n + 1, dtype=float) / n).astype(f32)
    path = walk - t * walk[:, :, -1:] + d.astype(f32)[:, None, None] * t               # bridge ending at d
    prev = np.concatenate([np.zeros((m, k, 1), f32), path[:, :, :-1]], axis=2)         # bar opens
    mid, gap2 = f32(0.5) * (prev + path), (path - prev) ** 2
    var2 = f32(2.0) * (s_step ** 2)[:, :, None]
    # the law of a Brownian bridge's maximum (minimum) between two known points
    hi = mid + f32(0.5) * np.sqrt(gap2 + var2 * e_hi)
    lo = mid - f32(0.5) * np.sqrt(gap2 + var2 * e_lo)
    cmax, cmin = hi.max(axis=2), lo.min(axis=2)
    # Each candidate read backwards (d - X(1 - t)) is an equally likely bridge from 0 to d: twice the
    # candidates for free, with extremes d - cmin and d - cmax.
    cmax = np.concatenate([cmax, d[:, None] - cmin], axis=1)
    cmin = np.concatenate([cmin, d[:, None] - cmax[:, :k]], axis=1)
    top0, bot0 = np.maximum(d, 0.0)[:, None], np.minimum(d, 0.0)[:, None]
    tiny = 1e-4 * (hr - lr)[:, None] + 1e-12
    # closeness of the excursions beyond the open-close band, as log ratios (the stretch it would take)
    dist = (np.log((cmax - top0 + tiny) / (hr[:, None] - top0 + tiny)) ** 2
            + np.log((bot0 - cmin + tiny) / (bot0 - lr[:, None] + tiny)) ** 2)
    best = np.argmin(dist, axis=1)
    rows = np.arange(m)
    rev = best >= k
    best = best % k
    path_b = path[rows, best].astype(float)
    pts = np.concatenate([np.zeros((m, 1)), path_b], axis=1)                          # (m, n+1)
    bh, bl = hi[rows, best].astype(float), lo[rows, best].astype(float)
    if rev.any():
        dr = d[rev][:, None]
        pts[rev] = dr - pts[rev][:, ::-1]
        bh[rev], bl[rev] = dr - bl[rev][:, ::-1], dr - bh[rev][:, ::-1]
    return _stretch_to_extremes(pts, bh, bl, d, hr, lr)


def _stretch_to_extremes(pts: np.ndarray, bh: np.ndarray, bl: np.ndarray, d: np.ndarray, hr: np.ndarray,
                         lr: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The chosen path (points from 0 to ``d``) and its bar highs/lows, stretched beyond the open-close band
    so that they reach the day's log high ``hr`` and low ``lr``."""
    pts[:, 0], pts[:, -1] = 0.0, d
    pmax, pmin = bh.max(axis=1, keepdims=True), bl.min(axis=1, keepdims=True)
    top, bot = np.maximum(d, 0.0)[:, None], np.minimum(d, 0.0)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        fa = np.where(pmax > top, (hr[:, None] - top) / (pmax - top), 0.0)
        fb = np.where(pmin < bot, (bot - lr[:, None]) / (bot - pmin), 0.0)

    def stretch(x: np.ndarray) -> np.ndarray:
        return np.where(x > top, top + (x - top) * fa, np.where(x < bot, bot + (x - bot) * fb, x))

    return stretch(pts), stretch(bh), stretch(bl)


def generate_intraday(daily: pd.DataFrame, seed: int = 42, interval: int = 5,
                      calendar: str = SAMPLE_CALENDAR) -> pd.DataFrame:
    """Synthetic ``interval``-minute bars for every daily row, matching its real OHLC exactly.

    Deterministic for a given ``seed``: a day's bars depend on the seed, the generator version
    and that day's row only. Index: bar start time,
    exchange-local. Raises ``ValueError`` naming the row for an invalid daily bar.
    """
    if daily.empty:
        raise ValueError("daily: expected at least one row")
    _check_daily(daily)
    tz = timezone_of(calendar)
    sched = sessions(calendar, daily.index[0], daily.index[-1])
    days = daily.index.intersection(sched.index)
    if len(days) == 0:
        raise ValueError(f"daily: no row falls on a {calendar} session ({daily.index[0]}..{daily.index[-1]})")
    daily = daily.loc[days]
    opens_utc = sched.loc[days, "open"]
    closes_utc = sched.loc[days, "close"]
    nbars = ((closes_utc - opens_utc) / pd.Timedelta(minutes=interval)).astype(int).to_numpy()
    ordinals = days.to_numpy(dtype="datetime64[D]").astype(np.int64)
    sig_day = day_volatility(daily)
    vol_all = daily["volume"].to_numpy(dtype=float) if "volume" in daily else np.zeros(len(days))
    step = np.timedelta64(interval, "m")
    pieces_idx, pieces = [], []
    for n in np.unique(nbars):
        sel_all = np.flatnonzero(nbars == n)
        chunk = max(1, _CHUNK_ELEMENTS // (CANDIDATES * n))
        for c0 in range(0, len(sel_all), chunk):
            sel = sel_all[c0:c0 + chunk]
            pieces.append(_chunk_bars(daily, sel, n, seed, ordinals, sig_day, vol_all))
            starts = opens_utc.to_numpy(dtype="datetime64[ns]")[sel][:, None] + np.arange(n)[None, :] * step
            pieces_idx.append(starts.ravel())
    idx = np.concatenate(pieces_idx)
    vals = np.concatenate(pieces)
    order = np.argsort(idx, kind="stable")
    return _frame(idx[order], vals[order], tz, dict(
        symbol=daily.attrs.get("symbol", SAMPLE_SYMBOL), calendar=calendar, interval=interval,
        synthetic_intraday=True, seed=seed, generator_version=GENERATOR_VERSION, source=SAMPLE_SOURCE))


def _draws(seed: int, ordinals: np.ndarray, n: int) -> Tuple[np.ndarray, ...]:
    """Each day's random draws from its own stream (:func:`_day_streams`), in the generator's order: the
    candidates' normals and exponentials (days, K, n), their volatility draws (days, K), volume noise (days, n)."""
    m = len(ordinals)
    z = np.empty((m, CANDIDATES, n), np.float32)
    e_hi, e_lo = np.empty_like(z), np.empty_like(z)
    u = np.empty((m, CANDIDATES))
    noise = np.empty((m, n))
    for i, g in enumerate(_day_streams(seed, ordinals)):
        g.standard_normal(dtype=np.float32, out=z[i])
        g.standard_exponential(dtype=np.float32, out=e_hi[i])
        g.standard_exponential(dtype=np.float32, out=e_lo[i])
        g.standard_normal(out=u[i])
        noise[i] = g.lognormal(0.0, 0.25, n)
    return z, e_hi, e_lo, u, noise


def _chunk_bars(daily: pd.DataFrame, sel: np.ndarray, n: int, seed: int, ordinals: np.ndarray,
                sig_day: np.ndarray, vol_all: np.ndarray) -> np.ndarray:
    """(days * n, 5) open, high, low, close, volume of the ``n`` bars of each of the days ``sel``."""
    m = len(sel)
    z, e_hi, e_lo, u, noise = _draws(seed, ordinals[sel], n)
    o = daily["open"].to_numpy(dtype=float)[sel]
    h = daily["high"].to_numpy(dtype=float)[sel]
    lo = daily["low"].to_numpy(dtype=float)[sel]
    c = daily["close"].to_numpy(dtype=float)[sel]
    pts, xh, xl = _bridge_block(z, e_hi, e_lo, u, sig_day[sel], np.log(c / o), np.log(h / o),
                                np.log(lo / o))
    del z, e_hi, e_lo
    H, L = h[:, None], lo[:, None]
    prices = np.clip(o[:, None] * np.exp(pts), L, H)
    prices[:, 0], prices[:, -1] = o, c
    bo, bc = prices[:, :-1], prices[:, 1:]
    bh = np.minimum(np.maximum(o[:, None] * np.exp(xh), np.maximum(bo, bc)), H)
    bl = np.maximum(np.minimum(o[:, None] * np.exp(xl), np.minimum(bo, bc)), L)
    rows = np.arange(m)
    bh[rows, np.argmax(xh, axis=1)] = h   # the day's extremes, exactly
    bl[rows, np.argmin(xl, axis=1)] = lo
    w = _u_shape(n)[None, :] * noise
    bv = np.floor(vol_all[sel][:, None] * w / w.sum(axis=1, keepdims=True))
    return np.stack([bo.ravel(), bh.ravel(), bl.ravel(), bc.ravel(), bv.ravel()], axis=1)


def _frame(idx_utc: np.ndarray, vals: np.ndarray, tz: str, attrs: dict) -> pd.DataFrame:
    index = pd.DatetimeIndex(idx_utc).tz_localize("UTC").tz_convert(tz)
    index.name = "datetime"
    out = pd.DataFrame(vals, index=index, columns=_COLUMNS)
    out.attrs.update(attrs)
    return out


def sample_cache_dir() -> Optional[Path]:
    """Folder of the on-disk sample cache: ``$MLTRADE_SAMPLE_CACHE`` or ``$XDG_CACHE_HOME/mltrade``
    (``~/.cache/mltrade``; regenerable, so not in the working directory's ``.mltrade/`` state); None if off.

    Set ``MLTRADE_SAMPLE_CACHE=off`` to always regenerate.
    """
    env = os.environ.get("MLTRADE_SAMPLE_CACHE")
    if env is not None and env.strip().lower() in ("", "0", "off", "none", "false"):
        return None
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "mltrade"


def _cache_file(folder: Path, daily: pd.DataFrame, seed: int, interval: int) -> Path:
    fp = hashlib.sha256()
    fp.update(daily.index.to_numpy(dtype="datetime64[ns]").astype(np.int64).tobytes())
    cols = [c for c in _COLUMNS if c in daily.columns]
    fp.update(",".join(cols).encode())
    fp.update(np.ascontiguousarray(daily[cols].to_numpy(dtype=float)).tobytes())
    key = f"{GENERATOR_VERSION}-{CANDIDATES}-{SIGMA_SPREAD}-{VOL_FLOOR}-{fp.hexdigest()[:16]}"
    return folder / f"sample_v{GENERATOR_VERSION}_seed{int(seed)}_{int(interval)}m_{hashlib.sha256(key.encode()).hexdigest()[:12]}.npz"


def _read_cache(path: Path) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            idx, vals = z["idx"], z["vals"]
        if idx.dtype != np.int64 or vals.ndim != 2 or vals.shape != (len(idx), 5) or not len(idx):
            raise ValueError("unexpected array shapes")
        return idx.view("datetime64[ns]"), vals
    except FileNotFoundError:
        return None
    except Exception as exc:  # a damaged cache is regenerated (and replaced atomically)
        log.warning("%s: unreadable sample cache (%s); regenerating", path, exc)
        return None


def _write_cache(path: Path, idx: np.ndarray, vals: np.ndarray) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, idx=idx.astype("datetime64[ns]").view(np.int64), vals=vals)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    except OSError as exc:  # a read-only home only costs the regeneration next time
        log.debug("sample cache not written to %s: %s", path, exc)


def cached_intraday(daily: pd.DataFrame, seed: int = 42, interval: int = 5,
                    folder: Optional[Path] = None) -> pd.DataFrame:
    """:func:`generate_intraday` through the on-disk cache in ``folder`` (default :func:`sample_cache_dir`).

    The file name carries the generator version, seed, interval and a hash of the daily rows and
    generator settings; files are written atomically and an unreadable file is regenerated.
    """
    folder = sample_cache_dir() if folder is None else Path(folder)
    path = _cache_file(folder, daily, seed, interval) if folder is not None else None
    hit = _read_cache(path) if path is not None else None
    if hit is not None:
        attrs = dict(symbol=daily.attrs.get("symbol", SAMPLE_SYMBOL), calendar=SAMPLE_CALENDAR, interval=interval,
                     synthetic_intraday=True, seed=seed, generator_version=GENERATOR_VERSION, source=SAMPLE_SOURCE)
        return _frame(hit[0], hit[1], timezone_of(SAMPLE_CALENDAR), attrs)
    out = generate_intraday(daily, seed=seed, interval=interval)
    if path is not None:
        _write_cache(path, out.index.tz_convert("UTC").tz_localize(None).to_numpy(dtype="datetime64[ns]"),
                     out[_COLUMNS].to_numpy(dtype=float))
    return out


@lru_cache(maxsize=4)
def _sample_cached(seed: int, interval: int) -> pd.DataFrame:
    return cached_intraday(load_daily(), seed=seed, interval=interval)


def sample_intraday(start: Optional[str] = None, end: Optional[str] = None, seed: int = 42,
                    interval: int = 5) -> pd.DataFrame:
    """Synthetic intraday bars of the embedded sample between ``start`` and ``end`` (dates, inclusive).

    Always a slice of the whole 20-year generation (cached on disk, see :func:`sample_cache_dir`).
    """
    full = _sample_cached(seed, interval)
    df = full
    if start is not None:
        df = df[df.index >= pd.Timestamp(start).tz_localize(full.index.tz)]
    if end is not None:
        df = df[df.index < pd.Timestamp(end).tz_localize(full.index.tz) + pd.Timedelta(days=1)]
    if df.empty:
        raise ValueError(f"start/end: the sample covers 1999-01-04..2018-12-31, got {start}..{end}")
    df = df.copy()
    df.attrs = dict(full.attrs)
    return df
