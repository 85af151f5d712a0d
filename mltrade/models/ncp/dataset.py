"""One sample per session for the NCP model: daily features, the first N candles, knock-out payoff labels.

Inputs are known at the decision time (after the session's first ``n_candles``
bars): the daily features are lagged (from :mod:`mltrade.models.features`) and
the candle sequence covers bars ``0..N-1`` only. Labels and per-direction trade
returns come from the certificate payoff priced with :mod:`mltrade.products`:
entry at the open of bar ``N`` (ask), exit at the session's last close (bid),
unless the stop (fraction of the entry price, on the bid) or the knock-out hits first.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np
import pandas as pd

from mltrade import products as P
from mltrade.calendars import tag_bars

SEQ_FEATURES = ("long_high", "long_low", "long_close", "short_high", "short_low", "short_close")


@dataclass
class PayoffSpec:
    """Certificate used for labels and trade returns (all pricing through :mod:`mltrade.products`)."""

    distance: float = 0.04        #: barrier distance from the entry index price (fraction)
    stop: float = 0.71            #: stop as a fraction of the entry price (0 disables)
    ratio: float = 0.01
    spread: float = 0.01
    fx: float = 1.0
    kind: str = "turbo"
    barrier_buffer: float = 0.0   #: mini futures: barrier buffer over the strike
    unwind: str = "worst"         #: mini futures: knock-out unwind mode

    def __post_init__(self) -> None:
        if not 0 < self.distance < 1:
            raise ValueError(f"distance: expected a fraction in (0, 1), got {self.distance!r}")
        if not 0 <= self.stop < 1:
            raise ValueError(f"stop: expected a fraction in [0, 1) (0 = no stop), got {self.stop!r}")
        if self.kind not in P.KINDS:
            raise ValueError(f"kind: expected one of {P.KINDS}, got {self.kind!r}")


@dataclass
class NCPInputs:
    """Model inputs per session, as of the decision bar."""

    dates: np.ndarray                 #: session dates (datetime64[D])
    daily: np.ndarray                 #: (n, F) lagged daily features
    seq: np.ndarray                   #: (n, N, 6) certificate % changes over the first N candles
    atr: np.ndarray                   #: (n,) early-session ATR over the first N candles / open
    price: np.ndarray                 #: (n,) index price at the decision (close of bar N-1)
    feature_names: List[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.dates)

    def subset(self, sel) -> "NCPInputs":
        return NCPInputs(self.dates[sel], self.daily[sel], self.seq[sel], self.atr[sel], self.price[sel],
                         self.feature_names)


@dataclass
class NCPDataset(NCPInputs):
    """Inputs plus labels and the trade return of a long and of a short certificate per session."""

    label: np.ndarray = field(default_factory=lambda: np.zeros(0))        #: 1 = long ends above entry
    long_return: np.ndarray = field(default_factory=lambda: np.zeros(0))  #: exit/entry - 1, long
    short_return: np.ndarray = field(default_factory=lambda: np.zeros(0))  #: exit/entry - 1, short
    #: exit reasons: session_end / stop / knockout
    long_exit: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    short_exit: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))

    def subset(self, sel) -> "NCPDataset":
        return NCPDataset(self.dates[sel], self.daily[sel], self.seq[sel], self.atr[sel], self.price[sel],
                          self.feature_names, self.label[sel], self.long_return[sel],
                          self.short_return[sel], self.long_exit[sel], self.short_exit[sel])


# --------------------------------------------------------------------------
# session layout
# --------------------------------------------------------------------------
def _check_bars(bars: pd.DataFrame) -> None:
    if not isinstance(bars, pd.DataFrame) or not isinstance(bars.index, pd.DatetimeIndex):
        raise ValueError("bars: expected a DataFrame with a DatetimeIndex")
    if bars.index.tz is None:
        raise ValueError("bars: expected a timezone-aware DatetimeIndex (bar start, exchange time)")
    missing = {"open", "high", "low", "close"} - set(bars.columns)
    if missing:
        raise ValueError(f"bars: missing columns {sorted(missing)}; expected open, high, low, close")
    if not bars.index.is_monotonic_increasing:
        raise ValueError("bars: index must be sorted by time")


def session_matrix(bars: pd.DataFrame, calendar: str = "XNAS", interval: int = 5):
    """Bars laid out as (sessions, max bars) arrays padded with NaN.

    Returns ``(dates, open, high, low, close, counts)``; bars outside regular
    sessions are dropped.
    """
    _check_bars(bars)
    tags = tag_bars(bars.index, calendar, interval)
    keep = tags.in_session
    sess = tags.session[keep]
    pos = tags.bar[keep]
    dates, inv = np.unique(sess, return_inverse=True)
    width = int(pos.max()) + 1 if len(pos) else 0
    out = []
    for col in ("open", "high", "low", "close"):
        m = np.full((len(dates), width), np.nan)
        m[inv, pos] = bars[col].to_numpy(float)[keep]
        out.append(m)
    counts = np.bincount(inv, minlength=len(dates))
    return (dates,) + tuple(out) + (counts,)


def daily_from_bars(bars: pd.DataFrame, calendar: str = "XNAS", interval: int = 5) -> pd.DataFrame:
    """Session OHLC(V) from intraday bars (naive index of session dates)."""
    tags = tag_bars(bars.index, calendar, interval)
    df = bars.loc[tags.in_session].copy()
    df["_s"] = tags.session[tags.in_session]
    agg = {"open": "first", "high": "max", "low": "min", "close": "last"}
    if "volume" in df.columns:
        agg["volume"] = "sum"
    out = df.groupby("_s").agg(agg)
    out.index = pd.DatetimeIndex(out.index)
    out.index.name = "date"
    return out


# --------------------------------------------------------------------------
# inputs: the shared feature pipeline, with an equivalent local fallback
# --------------------------------------------------------------------------
def _ltc_sequences_local(o, h, lo, c, n_candles: int, distance: float) -> np.ndarray:
    """(n, N, 6): % change of a long/short certificate (barrier ``distance`` from the open) vs the open."""
    o0 = o[:, :1]
    out = np.empty((len(o), n_candles, 6))
    for d, base in ((P.LONG, 0), (P.SHORT, 3)):
        k = P.barrier_from_distance(o0, d, distance)
        p0 = P.fair_value(d, o0, k, 1.0)
        for j, x in enumerate((h, lo, c)):
            out[:, :, base + j] = P.fair_value(d, x[:, :n_candles], k, 1.0) / p0 - 1.0
    return out


def _daily_features_local(daily: pd.DataFrame) -> pd.DataFrame:
    """Fallback lagged daily features (row t uses sessions up to t-1 and the calendar of t)."""
    o, h, lo, c = (daily[k].astype(float) for k in ("open", "high", "low", "close"))
    f = {}
    for w in (7, 14, 30):
        ma = c.rolling(w).mean()
        for name, s in (("open", o), ("high", h), ("low", lo), ("close", c)):
            f[f"{name}_ma{w}"] = s / ma - 1.0
    delta = c.diff()
    up = delta.clip(lower=0).ewm(alpha=1 / 14, adjust=False).mean()
    dn = (-delta).clip(lower=0).ewm(alpha=1 / 14, adjust=False).mean()
    f["rsi14"] = 100 - 100 / (1 + up / dn.replace(0, np.nan))
    f["rsi14_change"] = f["rsi14"].diff()
    f["ema_ratio"] = c.ewm(span=12, adjust=False).mean() / c.ewm(span=26, adjust=False).mean() - 1.0
    ma20, sd20 = c.rolling(20).mean(), c.rolling(20).std()
    f["bb_width"] = 4 * sd20 / ma20
    f["bb_pctb"] = (c - (ma20 - 2 * sd20)) / (4 * sd20)
    ll, hh = lo.rolling(14).min(), h.rolling(14).max()
    f["stoch_k"] = (c - ll) / (hh - ll)
    f["sma5_10_cross"] = np.sign(c.rolling(5).mean() - c.rolling(10).mean())
    f["day_return"] = c / o - 1.0
    f["range"] = (h - lo) / c
    out = pd.DataFrame(f, index=daily.index).shift(1)  # known before today's open
    idx = pd.DatetimeIndex(daily.index)
    for i in range(5):
        out[f"wd_{i}"] = (idx.day_of_week == i).astype(float)
    for i in range(1, 13):
        out[f"m_{i}"] = (idx.month == i).astype(float)
    for i in range(1, 32):
        out[f"dom_{i}"] = (idx.day == i).astype(float)
    for i in range(3):
        out[f"moq_{i}"] = (((idx.month - 1) % 3) == i).astype(float)
    return out


def feature_source() -> str:
    """Which feature pipeline is in use: ``shared`` (mltrade.models.features) or ``local`` (fallback)."""
    try:
        from mltrade.models import features
    except ImportError:
        return "local"
    return "shared" if hasattr(features, "daily_features") and hasattr(features, "ltc_sequences") else "local"


def _daily_features(daily: pd.DataFrame, dates: np.ndarray) -> pd.DataFrame:
    target = pd.DatetimeIndex(np.asarray(dates).astype("datetime64[ns]"))
    if feature_source() == "shared":
        from mltrade.models.features import daily_features
        return daily_features(daily, target)
    return _daily_features_local(daily).reindex(target)


def _sequences(bars, o, h, lo, c, dates, n_candles, distance, calendar, interval) -> np.ndarray:
    if feature_source() == "shared":
        from mltrade.models.features import ltc_sequences
        sd, x = ltc_sequences(bars, n_candles=n_candles, distance=distance, calendar=calendar,
                              interval=interval)
        pos = pd.DatetimeIndex(sd).get_indexer(pd.DatetimeIndex(np.asarray(dates).astype("datetime64[ns]")))
        if (pos < 0).any():
            missing = np.asarray(dates)[pos < 0][:3]
            raise ValueError(f"bars: no complete first {n_candles} candles for sessions {list(missing)}")
        return x[pos]
    return _ltc_sequences_local(o, h, lo, c, n_candles, distance)


def history_daily(bars: pd.DataFrame, calendar: str, interval: int,
                  daily_history: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """Session OHLC aggregated from ``bars``, preceded by the ``daily_history`` rows before the first session.

    Rows of ``daily_history`` on or after the bars' first session are ignored: the bars are the truth.
    """
    agg = daily_from_bars(bars, calendar, interval)
    if daily_history is None or daily_history.empty:
        return agg
    hist = daily_history.copy()
    hidx = pd.DatetimeIndex(hist.index)
    hist.index = (hidx.tz_localize(None) if hidx.tz is not None else hidx).normalize()
    missing = {"open", "high", "low", "close"} - set(hist.columns)
    if missing:
        raise ValueError(f"daily_history: missing columns {sorted(missing)}; expected open, high, low, close")
    cols = [c for c in agg.columns if c in hist.columns]
    before = hist.loc[hist.index < agg.index[0], cols] if len(agg) else hist[cols]
    return pd.concat([before, agg[cols]])


def build_inputs(bars: pd.DataFrame, n_candles: int = 17, distance: float = 0.04,
                 calendar: Optional[str] = None, interval: Optional[int] = None,
                 daily_history: Optional[pd.DataFrame] = None, warmup: int = 0) -> NCPInputs:
    """Model inputs for every session that has at least ``n_candles`` bars (drops feature warm-up rows).

    Daily features come from sessions aggregated from ``bars``, preceded by
    ``daily_history`` (daily bars before the first session, for indicator warm-up);
    a session's own row is never used (features are lagged one session).
    """
    if n_candles < 1:
        raise ValueError(f"n_candles: expected a positive integer, got {n_candles!r}")
    calendar = calendar or bars.attrs.get("calendar", "XNAS")
    interval = int(interval or bars.attrs.get("interval", 5))
    dates, o, h, lo, c, counts = session_matrix(bars, calendar, interval)
    ok = (counts >= n_candles) & np.all(np.isfinite(c[:, :n_candles]), axis=1) if o.shape[1] >= n_candles \
        else np.zeros(len(dates), bool)
    feats = _daily_features(history_daily(bars, calendar, interval, daily_history), dates)
    fx = feats.to_numpy(float)
    ok &= np.all(np.isfinite(fx), axis=1)
    if warmup:
        ok[:warmup] = False
    sel = np.flatnonzero(ok)
    o, h, lo, c = o[sel], h[sel], lo[sel], c[sel]
    if len(sel) == 0:
        seq = np.zeros((0, n_candles, 6))
        atr = np.zeros(0)
        price = np.zeros(0)
    else:
        seq = _sequences(bars, o, h, lo, c, dates[sel], n_candles, distance, calendar, interval)
        prev_c = np.concatenate([o[:, :1], c[:, :n_candles - 1]], axis=1)
        tr = np.maximum(h[:, :n_candles], prev_c) - np.minimum(lo[:, :n_candles], prev_c)
        atr = tr.mean(axis=1) / o[:, 0]
        price = c[:, n_candles - 1]
    return NCPInputs(dates[sel], fx[sel].astype("float32"), seq.astype("float32"), atr, price,
                     list(feats.columns))


# --------------------------------------------------------------------------
# labels: certificate payoff after the decision
# --------------------------------------------------------------------------
def trade_outcomes(o, h, lo, c, counts, entry_bar: int, direction: int,
                   spec: PayoffSpec) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised certificate round trips per session (rows).

    Buy at the ask of bar ``entry_bar``'s open, sell at the bid of the last
    close, the stop (gap-aware, on the bid) or the knock-out, whichever comes
    first. Returns ``(return, exit_reason, entry_ask)``.
    """
    n = len(o)
    d = direction
    s0 = o[:, entry_bar]
    barrier = P.barrier_from_distance(s0, d, spec.distance)
    if spec.kind == "turbo":
        strike = barrier
    else:
        strike = barrier / (1.0 + d * spec.barrier_buffer)
    entry = P.ask_price(d, s0, strike, spec.ratio, spec.fx, spec.spread)
    bo, bh, bl, bc = (x[:, entry_bar:] for x in (o, h, lo, c))
    width = bo.shape[1]
    valid = np.arange(width)[None, :] < (counts - entry_bar)[:, None]
    worst = bl if d > 0 else bh
    ko = P.is_knocked_out(d, bl, bh, barrier[:, None]) & valid
    stop_px = spec.stop * entry
    if spec.stop > 0:
        stop_hit = (P.bid_price(d, worst, strike[:, None], spec.ratio, spec.fx, spec.spread)
                    <= stop_px[:, None]) & valid
    else:
        stop_hit = np.zeros_like(ko)
    event = ko | stop_hit
    has = event.any(axis=1)
    first = np.where(has, np.argmax(event, axis=1), 0)
    rows = np.arange(n)
    last = np.clip(counts - entry_bar - 1, 0, width - 1)
    exit_px = P.bid_price(d, bc[rows, last], strike, spec.ratio, spec.fx, spec.spread)
    reason = np.full(n, "session_end", dtype=object)
    fo = bo[rows, first]
    open_ko = P.is_knocked_out(d, fo, fo, barrier)
    open_bid = P.bid_price(d, fo, strike, spec.ratio, spec.fx, spec.spread)
    # knock-out value: turbo 0, mini future the residual at the unwind price
    if spec.kind == "turbo":
        ko_val = np.zeros(n)
    else:
        unw = P.unwind_price(d, barrier, fo, bl[rows, first], bh[rows, first], bc[rows, first], spec.unwind,
                             gapped=open_ko)
        ko_val = P.residual_value(d, unw, strike, spec.ratio, spec.fx)
    is_stop_first = has & stop_hit[rows, first] & ~open_ko
    is_ko = has & ~is_stop_first
    stop_fill = np.minimum(open_bid, stop_px)  # gap-aware: a gap through the stop fills at the open's bid
    exit_px = np.where(is_stop_first, stop_fill, np.where(is_ko, ko_val, exit_px))
    reason[is_stop_first] = "stop"
    reason[is_ko] = "knockout"
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = np.where(entry > 0, exit_px / entry - 1.0, np.nan)
    return ret, reason, entry


def build_dataset(bars: pd.DataFrame, n_candles: int = 17, spec: Optional[PayoffSpec] = None,
                  calendar: Optional[str] = None, interval: Optional[int] = None,
                  daily_history: Optional[pd.DataFrame] = None, seq_distance: float = 0.04,
                  warmup: int = 0) -> NCPDataset:
    """Inputs, labels and long/short trade returns for every complete session of ``bars``."""
    spec = spec or PayoffSpec()
    calendar = calendar or bars.attrs.get("calendar", "XNAS")
    interval = int(interval or bars.attrs.get("interval", 5))
    inp = build_inputs(bars, n_candles, seq_distance, calendar, interval, daily_history, warmup)
    dates, o, h, lo, c, counts = session_matrix(bars, calendar, interval)
    pos = np.searchsorted(dates, inp.dates)
    o, h, lo, c, counts = o[pos], h[pos], lo[pos], c[pos], counts[pos]
    enough = counts > n_candles  # entry bar must exist
    if len(o) and o.shape[1] <= n_candles:
        enough[:] = False
    inp = inp.subset(enough)
    o, h, lo, c, counts = o[enough], h[enough], lo[enough], c[enough], counts[enough]
    if len(o) == 0:
        z = np.zeros(0)
        return NCPDataset(inp.dates, inp.daily, inp.seq, inp.atr, inp.price, inp.feature_names,
                          z, z, z, np.zeros(0, object), np.zeros(0, object))
    lr, lx, _ = trade_outcomes(o, h, lo, c, counts, n_candles, P.LONG, spec)
    sr, sx, _ = trade_outcomes(o, h, lo, c, counts, n_candles, P.SHORT, spec)
    label = (lr > 0).astype("float32")
    return NCPDataset(inp.dates, inp.daily, inp.seq, inp.atr, inp.price, inp.feature_names,
                      label, lr, sr, lx, sx)
