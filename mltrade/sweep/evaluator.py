"""Vectorised knock-out evaluator: many parameter sets over many sessions at once, equal to the broker.

For every parameter set ``p`` and session ``s`` it computes the trade an
intraday strategy makes under ``KnockoutBroker`` (decide on the close of
session bar ``decision_bar - 1``, buy at the next bar's open at the ask, hold
until the stop, the knock-out or the session's last close) with numpy arrays
of shape ``(n_sets, n_sessions)``:

* decision price, barrier (``barrier_from_distance`` + ``round_barrier_safe``), strike;
* knock-out at the entry bar's open (order rejected) and the entry ask;
* the first bar whose adverse extreme reaches ``max(barrier, stop level)`` in
  the certificate's direction, found by bisection over a sparse-table range
  minimum (no per-bar Python loop); at that bar the broker's intra-bar order
  (:mod:`mltrade.brokers.intrabar`: open first, knock-out before stop at the
  open, then the nearer level first) decides knock-out / stop and the price;
* exits at the session's last close at the bid otherwise.

``IntradayMomentum``'s ``direction_rule`` (``momentum``, ``long``, ``random`` with
its ``seed``) is a per-set parameter; the random rule replays the strategy's
``random.Random(seed).choice`` sequence, one draw per decision.

Only the per-certificate path is vectorised over sessions; the cash (whole
certificates, fees, compounding) is a cheap loop over sessions vectorised
over sets. Every price comes from :mod:`mltrade.products`.

Financing: the broker moves a mini future's financing level once per UTC
calendar day from the day it was ordered. An intraday trade never spans a UTC
day change (``session_grid`` checks that every session lies within one UTC
day), so intraday trades carry no financing; the financing parameters are
accepted and validated for the day a sweep spans sessions overnight.
"""
from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from mltrade.calendars import tag_bars, timezone_of
from mltrade.feeds.bars import datetime_to_num
from mltrade.products import (ask_price, barrier_from_distance, bid_price, residual_value, round_barrier_safe,
                              underlying_for_bid, unwind_price)

#: trade status per (set, session)
NO_TRADE, TRADED, REJECTED_KNOCKOUT, REJECTED_CASH = 0, 1, 2, 3
#: exit reasons (codes index this tuple)
EXIT_REASONS = ("none", "session_end", "stop", "knockout")
EXIT_NONE, EXIT_SESSION_END, EXIT_STOP, EXIT_KNOCKOUT = 0, 1, 2, 3

#: parameter names with their defaults (strategy params + broker params)
DEFAULTS: Dict[str, object] = {
    "decision_bar": 17, "min_move": 0.0, "distance": 0.04, "stop": 0.71, "stake": np.nan, "stake_fraction": np.nan,
    "kind": "turbo", "ratio": 0.01, "spread": 0.0, "fx": 1.0, "barrier_step": 0.0,
    "barrier_buffer": 0.0, "financing_rate": 0.0, "financing_spread": 0.0, "unwind": "worst",
    "cash": 10_000.0, "commission_fixed": 0.0, "commission_pct": 0.0,
    "direction_rule": "momentum", "seed": 7,
}
#: ``IntradayMomentum.direction_rule`` values; ``param_sets`` turns them into codes (``p["rule"]``)
DIRECTION_RULES = ("momentum", "long", "random")
RULE_MOMENTUM, RULE_LONG, RULE_RANDOM = 0, 1, 2
#: parameters that must be the same for every set of one evaluation
SCALAR_PARAMS = ("barrier_step", "unwind")


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

    def range_min_table(self, which: str) -> np.ndarray:
        """Sparse table ``T[k, s, i] = min(A[s, i : i + 2**k])`` for ``A`` = low (long) or -high (short)."""
        if which not in self._tables:
            a = self.low if which == "long" else -self.high
            a = np.where(np.isnan(a), np.inf, a)
            levels = [a]
            k = 1
            while (1 << k) <= a.shape[1]:
                prev = levels[-1]
                half = 1 << (k - 1)
                nxt = prev.copy()
                nxt[:, :-half] = np.minimum(prev[:, :-half], prev[:, half:])
                levels.append(nxt)
                k += 1
            self._tables[which] = np.stack(levels)
        return self._tables[which]


def session_grid(bars: pd.DataFrame, exchange: str = "XNAS", interval: int = 5) -> SessionGrid:
    """Lay out intraday bars by session and bar number (the numbers ``IndexData`` tags them with).

    Sessions must be complete and without missing bars, except that the first
    session may start late and the last may end early (as a data span cut mid-session).
    """
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
    step_ok = np.r_[True, (col[1:] == col[:-1] + 1) | change[1:]]
    if not step_ok.all():
        bad = int(np.flatnonzero(~step_ok)[0])
        raise ValueError(f"bars: session {sess[bad]} has missing bars before row {bad} ({idx[bad]}): "
                         f"bar number {col[bad]} follows {col[bad - 1]}; the evaluator needs gap-free sessions")
    if len(starts) > 1 and col[starts[1:]].any():
        s = int(np.flatnonzero(col[starts[1:]] != 0)[0]) + 1
        raise ValueError(f"bars: session {sess[starts[s]]} starts at bar {col[starts[s]]}, expected bar 0 "
                         f"(only the first session may start late)")
    left = tags.left.astype(int)
    if len(ends) > 1 and left[ends[:-1]].any():
        s = int(np.flatnonzero(left[ends[:-1]] != 0)[0])
        raise ValueError(f"bars: session {sess[ends[s]]} ends {left[ends[s]]} bars before its close "
                         f"(only the last session may end early)")
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


def utc_day_numbers(index: pd.DatetimeIndex) -> np.ndarray:
    """UTC calendar day numbers of bar times, as ``KnockoutBroker`` counts financing days."""
    return np.floor(datetime_to_num(index) + 1e-9).astype(np.int64)


# --------------------------------------------------------------------------- parameters
def param_sets(sets: Sequence[Mapping] | Mapping[str, object], n: Optional[int] = None) -> Dict[str, np.ndarray]:
    """Normalise parameter sets (a list of dicts, or a dict of scalars/arrays) to ``(n_sets, 1)`` arrays.

    Unknown names are rejected; missing ones take :data:`DEFAULTS`.
    """
    if isinstance(sets, Mapping):
        cols = dict(sets)
        lens = {len(v) for v in cols.values() if isinstance(v, (list, tuple, np.ndarray)) and np.ndim(v) == 1}
        if len(lens) > 1:
            raise ValueError(f"params: array parameters have different lengths {sorted(lens)}")
        n = lens.pop() if lens else (n or 1)
    else:
        sets = list(sets)
        n = len(sets)
        if n == 0:
            raise ValueError("params: expected at least one parameter set")
        keys = set().union(*[s.keys() for s in sets])
        cols = {k: [s.get(k, DEFAULTS.get(k)) for s in sets] for k in keys}
    unknown = set(cols) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"params: unknown parameter(s) {sorted(unknown)}; valid: {', '.join(sorted(DEFAULTS))}")
    out: Dict[str, np.ndarray] = {}
    for name, default in DEFAULTS.items():
        v = cols.get(name, default)
        if name in SCALAR_PARAMS:
            vals = set(np.atleast_1d(np.asarray(v, dtype=object)).tolist())
            if len(vals) != 1:
                raise ValueError(f"params: {name} must be the same for all sets of one evaluation, got {sorted(vals)}")
            out[name] = np.asarray(vals.pop())
            continue
        if name == "kind":
            arr = np.broadcast_to(np.asarray(v, dtype=object), (n,))
            bad = [k for k in set(arr.tolist()) if k not in ("turbo", "minifuture")]
            if bad:
                raise ValueError(f"params: kind must be 'turbo' or 'minifuture', got {bad}")
            out["is_mini"] = (arr == "minifuture")[:, None]
            continue
        if name == "direction_rule":
            arr = np.broadcast_to(np.asarray(v, dtype=object), (n,))
            bad = sorted({str(r) for r in arr.tolist() if r not in DIRECTION_RULES})
            if bad:
                raise ValueError(f"params: direction_rule must be one of {', '.join(DIRECTION_RULES)}, got {bad}")
            out["rule"] = np.asarray([DIRECTION_RULES.index(r) for r in arr.tolist()], dtype=np.int8)[:, None]
            continue
        if name == "seed":
            arr = np.broadcast_to(np.asarray(v, dtype=object), (n,))
            seeds = []
            for i, x in enumerate(arr.tolist()):
                if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer, float, np.floating)) \
                        or x != x or float(x) != int(x) or abs(int(x)) >= 2 ** 63:
                    raise ValueError(f"params: set {i}: seed = {x!r}, expected an integer (the random "
                                     f"direction rule must be reproducible)")
                seeds.append(int(x))
            out["seed"] = np.asarray(seeds, dtype=np.int64)[:, None]
            continue
        arr = np.asarray([np.nan if x is None else x for x in np.broadcast_to(np.asarray(v, dtype=object), (n,))],
                         dtype=float)
        out[name] = arr[:, None]
    _check_ranges(out)
    return out


def _check_ranges(p: Dict[str, np.ndarray]) -> None:
    def bad(name: str, mask: np.ndarray, expected: str) -> None:
        if mask.any():
            i = int(np.flatnonzero(mask.ravel())[0])
            raise ValueError(f"params: set {i}: {name} = {p[name].ravel()[i]!r}, expected {expected}")
    bad("decision_bar", ~(p["decision_bar"] >= 1) | (p["decision_bar"] != np.floor(p["decision_bar"])),
        "an integer >= 1")
    bad("distance", ~((p["distance"] > 0) & (p["distance"] < 1)), "a fraction in (0, 1)")
    bad("stop", ~(np.isnan(p["stop"]) | ((p["stop"] > 0) & (p["stop"] < 1))), "a fraction in (0, 1) or None")
    for name in ("ratio", "fx", "cash"):
        bad(name, ~(p[name] > 0), "a positive number")
    for name in ("spread", "commission_fixed", "commission_pct", "barrier_buffer", "min_move", "financing_spread"):
        bad(name, ~(p[name] >= 0), "a non-negative number")
    bad("stake", ~(np.isnan(p["stake"]) | (p["stake"] > 0)), "a positive amount or None")
    bad("stake_fraction", ~(np.isnan(p["stake_fraction"]) | (p["stake_fraction"] >= 0)),
        "a non-negative fraction or None")


# --------------------------------------------------------------------------- signals
@dataclass
class Signals:
    """Per (set, session): direction (+1/-1, 0 = no trade), decision bar number, barrier distance."""

    direction: np.ndarray
    column: np.ndarray
    distance: np.ndarray


SignalFn = Callable[[SessionGrid, Dict[str, np.ndarray]], Signals]


def _decision_column(grid: SessionGrid, p: Dict[str, np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    k = np.broadcast_to((p["decision_bar"] - 1).astype(int), (p["decision_bar"].shape[0], grid.n_sessions))
    # decide on a present bar that is neither the session's nor the data's last bar
    ok = (k >= grid.first[None, :]) & (k < grid.last[None, :])
    return k, ok


def momentum_signals(grid: SessionGrid, p: Dict[str, np.ndarray]) -> Signals:
    """``IntradayMomentum``: decide where the session's move so far is at least ``min_move``.

    The direction follows ``direction_rule``: ``momentum`` (long if the session is
    up at the decision bar's close, short if not), ``long``, or ``random``
    (see :func:`random_directions`).
    """
    k, ok = _decision_column(grid, p)
    rows = np.arange(grid.n_sessions)[None, :]
    kc = np.clip(k, 0, grid.width - 1)
    price = grid.close[rows, kc]
    with np.errstate(invalid="ignore", divide="ignore"):
        move = price / grid.open[:, 0][None, :] - 1.0
    ok = ok & (grid.first[None, :] == 0) & ~(np.abs(move) < p["min_move"])
    direction = np.where(move > 0, 1, -1).astype(np.int8)
    rule = p.get("rule")
    if rule is not None:
        rule = np.broadcast_to(rule, k.shape)
        direction = np.where(rule == RULE_LONG, np.int8(1), direction)
        rnd = rule[:, 0] == RULE_RANDOM
        if rnd.any():
            seeds = np.broadcast_to(p["seed"], (k.shape[0], 1))[rnd, 0]
            direction[rnd] = random_directions(ok[rnd], seeds)
    direction = np.where(ok, direction, 0).astype(np.int8)
    return Signals(direction, k, np.broadcast_to(p["distance"], k.shape))


def random_directions(decides: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """``IntradayMomentum``'s ``random`` rule: ``random.Random(seed).choice((1, -1))`` once per decision.

    ``decides`` (sets x sessions): where the strategy makes a decision; the i-th
    decision of a set (in session order) takes the i-th draw of its seed's
    sequence, exactly as the strategy's generator is consumed. One Python
    generator per distinct seed, drawn as far as the busiest set needs.
    """
    decides = np.asarray(decides, dtype=bool)
    out = np.ones(decides.shape, dtype=np.int8)
    nth = np.cumsum(decides, axis=1) - 1
    counts = decides.sum(axis=1)
    for seed in np.unique(seeds):
        mine = seeds == seed
        need = int(counts[mine].max()) if mine.any() else 0
        if need == 0:
            continue
        rng = random.Random(int(seed))
        seq = np.fromiter((rng.choice((1, -1)) for _ in range(need)), dtype=np.int8, count=need)
        out[mine] = np.where(decides[mine], seq[np.clip(nth[mine], 0, need - 1)], 1)
    return out


def session_signals(direction: Sequence[int] | np.ndarray,
                    distance: Optional[Sequence[float] | np.ndarray] = None) -> SignalFn:
    """A given signal per session (``direction`` and optional ``distance``, NaN = the set's distance)."""
    dirs = np.asarray(direction, dtype=np.int8)
    if not np.isin(dirs, (-1, 0, 1)).all():
        raise ValueError(f"signals: directions must be -1, 0 or +1, got {sorted(set(dirs.ravel().tolist()))}")
    dist = None if distance is None else np.asarray(distance, dtype=float)
    if dist is not None and not (np.isnan(dist) | ((dist > 0) & (dist < 1))).all():
        bad = dist[~(np.isnan(dist) | ((dist > 0) & (dist < 1)))][0]
        raise ValueError(f"signals: distance must be a fraction in (0, 1) or NaN, got {bad!r}")

    def fn(grid: SessionGrid, p: Dict[str, np.ndarray]) -> Signals:
        if dirs.shape[-1] != grid.n_sessions:
            raise ValueError(f"signals: expected {grid.n_sessions} sessions, got {dirs.shape[-1]}")
        k, ok = _decision_column(grid, p)
        d = np.where(ok, np.broadcast_to(dirs, k.shape), 0).astype(np.int8)
        base = np.broadcast_to(p["distance"], k.shape)
        dd = base if dist is None else np.where(np.isnan(dist), base, np.broadcast_to(dist, k.shape))
        return Signals(d, k, dd)
    return fn


def evaluate_bars(bars: pd.DataFrame, sets, direction: Optional[Sequence[int]] = None,
                  distance: Optional[Sequence[float]] = None, exchange: str = "XNAS",
                  interval: int = 5) -> "SweepResult":
    """One call for models' signals: per-session ``direction`` (or momentum if None) over ``bars``."""
    grid = session_grid(bars, exchange, interval)
    signal = momentum_signals if direction is None else session_signals(direction, distance)
    return evaluate(grid, sets, signal)


def signals_from_mapping(grid: SessionGrid, signals: Mapping) -> SignalFn:
    """:func:`session_signals` from ``SignalStrategy``'s ``{date: direction | (direction, distance)}``."""
    from mltrade.strategies.signal import normalise_signals

    norm = normalise_signals(signals)
    keys = [str(s.date()) for s in grid.sessions]
    dirs = [norm.get(k, (0, None))[0] for k in keys]
    dist = [np.nan if norm.get(k, (0, None))[1] is None else norm[k][1] for k in keys]
    return session_signals(dirs, dist)


# --------------------------------------------------------------------------- evaluation
@dataclass
class SweepResult:
    """Trades of every set in every session (``(n_sets, n_sessions)`` arrays) and each set's final cash."""

    grid: SessionGrid
    params: Dict[str, np.ndarray]
    status: np.ndarray
    direction: np.ndarray
    entry_bar: np.ndarray
    exit_bar: np.ndarray
    exit_reason: np.ndarray
    strike: np.ndarray
    barrier: np.ndarray
    entry_price: np.ndarray
    exit_price: np.ndarray
    entry_underlying: np.ndarray
    exit_underlying: np.ndarray
    size: np.ndarray
    fees: np.ndarray
    pnl: np.ndarray
    cash: np.ndarray            #: cash after each session (n_sets, n_sessions)
    final_cash: np.ndarray      #: (n_sets,)

    @property
    def n_sets(self) -> int:
        """Number of parameter sets (rows)."""
        return self.status.shape[0]

    def total_return(self) -> np.ndarray:
        """Final cash over starting cash, minus 1, per set."""
        return self.final_cash / self.params["cash"][:, 0] - 1.0

    def trade_count(self) -> np.ndarray:
        """Filled trades per set."""
        return (self.status == TRADED).sum(axis=1)

    def session_returns(self) -> np.ndarray:
        """Per-session relative change of the cash (n_sets, n_sessions)."""
        prev = np.concatenate([self.params["cash"], self.cash[:, :-1]], axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(prev > 0, self.cash / prev - 1.0, 0.0)

    def trades(self, i: int) -> pd.DataFrame:
        """The round trips of set ``i`` (one row per trade, like ``KnockoutBroker.roundtrips``)."""
        s = np.flatnonzero(self.status[i] == TRADED)
        t = self.grid.times
        ent = pd.DatetimeIndex(t[s, self.entry_bar[i, s]]).tz_localize("UTC").tz_convert(self.grid.tz)
        ext = pd.DatetimeIndex(t[s, self.exit_bar[i, s]]).tz_localize("UTC").tz_convert(self.grid.tz)
        return pd.DataFrame({
            "session": self.grid.sessions[s], "direction": np.where(self.direction[i, s] > 0, "long", "short"),
            "strike": self.strike[i, s], "barrier": self.barrier[i, s], "size": self.size[i, s],
            "entry_time": ent, "entry_price": self.entry_price[i, s], "entry_underlying": self.entry_underlying[i, s],
            "exit_time": ext, "exit_price": self.exit_price[i, s], "exit_underlying": self.exit_underlying[i, s],
            "exit_reason": [EXIT_REASONS[r] for r in self.exit_reason[i, s]],
            "fees": self.fees[i, s], "pnl": self.pnl[i, s],
        })


#: (sets x sessions) cells evaluated at once; larger evaluations are split into chunks of sets
MAX_CELLS = 1_000_000


def evaluate(grid: SessionGrid, sets, signal: SignalFn = momentum_signals) -> SweepResult:
    """Evaluate every parameter set over every session of ``grid`` (one broker run per set)."""
    p = sets if isinstance(sets, dict) and "is_mini" in sets else param_sets(sets)
    n_p = p["decision_bar"].shape[0]
    chunk = max(1, MAX_CELLS // max(grid.n_sessions, 1))
    if n_p > chunk:   # bound the memory of long spans: evaluate chunks of sets and join them
        parts = [_evaluate({k: (v[i:i + chunk] if v.ndim else v) for k, v in p.items()}, grid, signal)
                 for i in range(0, n_p, chunk)]
        joined = {f.name: (np.concatenate([getattr(r, f.name) for r in parts])
                           if isinstance(getattr(parts[0], f.name), np.ndarray) else getattr(parts[0], f.name))
                  for f in dataclasses.fields(SweepResult) if f.name != "params"}
        return SweepResult(params=p, **joined)
    return _evaluate(p, grid, signal)


def _evaluate(p: Dict[str, np.ndarray], grid: SessionGrid, signal: SignalFn) -> SweepResult:
    sig = signal(grid, p)
    n_p, n_s = sig.direction.shape
    rows = np.broadcast_to(np.arange(n_s)[None, :], (n_p, n_s))
    d = sig.direction.astype(np.int8)
    active = d != 0
    ds = np.where(active, d, 1).astype(float)   # a direction everywhere, masked later
    k = np.clip(sig.column, 0, grid.width - 1)
    e = np.clip(k + 1, 0, grid.width - 1)
    ratio, fx, spread = p["ratio"], p["fx"], p["spread"]
    step = float(p["barrier_step"])
    # ---- product at the decision (KnockoutStrategy.make_product -> KnockoutProduct.for_index)
    price = grid.close[rows, k]
    barrier = round_barrier_safe(barrier_from_distance(price, ds, sig.distance), ds, step)
    is_mini = np.broadcast_to(p["is_mini"], (n_p, n_s))
    strike = np.where(is_mini, barrier / (1.0 + ds * p["barrier_buffer"]), barrier)
    # ---- entry at the next bar's open (knock-out at the open comes first)
    o_e = grid.open[rows, e]
    ko_open = active & (ds * o_e <= ds * barrier)
    entry = ask_price(ds, o_e, strike, ratio, fx)
    filled = active & ~ko_open & (entry > 0)
    # ---- stop level on the underlying and the first bar that reaches max(barrier, stop level)
    stop_price = p["stop"] * entry
    has_stop = ~np.isnan(stop_price) & (stop_price > 0)
    with np.errstate(invalid="ignore"):
        level = np.where(has_stop, underlying_for_bid(ds, np.where(has_stop, stop_price, 0.0), strike, ratio, fx,
                                                      spread), -ds * np.inf)
    thr = np.maximum(ds * barrier, ds * level)
    last = np.broadcast_to(grid.last[None, :], (n_p, n_s))
    j = _first_touch(grid, ds, rows, e, last, thr)
    found = j <= last
    jj = np.minimum(j, last)
    o, h, lo, c = (g[rows, jj] for g in (grid.open, grid.high, grid.low, grid.close))
    open_ko = found & (ds * o <= ds * barrier)
    open_stop = found & ~open_ko & (ds * o <= ds * level)
    intra_ko = found & ~open_ko & ~open_stop & (ds * barrier >= ds * level)
    intra_stop = found & ~open_ko & ~open_stop & ~intra_ko
    knock = open_ko | intra_ko
    # ---- exit price per certificate
    close_last = grid.close[rows, last]
    exit_px = bid_price(ds, close_last, strike, ratio, fx, spread)
    exit_u = close_last.copy()
    exit_px = np.where(open_stop, bid_price(ds, o, strike, ratio, fx, spread), exit_px)
    exit_u = np.where(open_stop, o, exit_u)
    exit_px = np.where(intra_stop, stop_price, exit_px)
    exit_u = np.where(intra_stop, level, exit_u)
    unwind = unwind_price(ds, barrier, o, lo, h, c, str(p["unwind"]), open_ko)
    resid = np.where(is_mini, residual_value(ds, unwind, strike, ratio, fx), 0.0)
    exit_px = np.where(knock, resid, exit_px)
    exit_u = np.where(knock, unwind, exit_u)
    reason = np.where(knock, EXIT_KNOCKOUT, np.where(open_stop | intra_stop, EXIT_STOP, EXIT_SESSION_END))
    exit_bar = np.where(found, jj, last)
    # ---- cash: whole certificates, fees, compounding (loop over sessions, vectorised over sets)
    status = np.where(ko_open, REJECTED_KNOCKOUT, NO_TRADE).astype(np.int8)
    size = np.zeros((n_p, n_s))
    fees = np.zeros((n_p, n_s))
    pnl = np.zeros((n_p, n_s))
    cash_hist = np.zeros((n_p, n_s))
    cash = p["cash"][:, 0].astype(float).copy()
    fixed, pct = p["commission_fixed"][:, 0], p["commission_pct"][:, 0]
    stake = p["stake"][:, 0]
    frac = np.nan_to_num(p["stake_fraction"][:, 0], nan=0.0)
    pay_fee = reason != EXIT_KNOCKOUT
    for s in range(n_s):
        f = filled[:, s]
        if f.any():
            px = entry[:, s]
            # KnockoutStrategy.open_knockout: stake, else stake_fraction of the (flat) account value, else all cash
            st = np.where(~np.isnan(stake), stake, np.where(frac > 0, np.minimum(frac * (cash + 0.0), cash), cash))
            budget = np.minimum(st, cash) - fixed
            with np.errstate(divide="ignore", invalid="ignore"):
                n = np.floor(budget / (px * (1.0 + pct)) + 1e-9)
            comm_in = fixed + pct * n * px
            ok = f & (n > 0) & ~(n * px + comm_in > cash + 1e-9)
            status[ok, s] = TRADED
            status[f & ~ok, s] = REJECTED_CASH
            xp = exit_px[:, s]
            comm_out = np.where(pay_fee[:, s], fixed + pct * n * xp, 0.0)
            new = (cash - (n * px + comm_in)) + (n * xp - comm_out)
            cash = np.where(ok, new, cash)
            size[:, s] = np.where(ok, n, 0.0)
            fees[:, s] = np.where(ok, comm_in + comm_out, 0.0)
            pnl[:, s] = np.where(ok, n * xp - n * px - (comm_in + comm_out), 0.0)
        cash_hist[:, s] = cash
    traded = status == TRADED
    return SweepResult(
        grid=grid, params=p, status=status, direction=np.where(active, d, 0).astype(np.int8),
        entry_bar=np.where(traded, e, -1), exit_bar=np.where(traded, exit_bar, -1),
        exit_reason=np.where(traded, reason, EXIT_NONE).astype(np.int8),
        strike=np.where(active, strike, np.nan), barrier=np.where(active, barrier, np.nan),
        entry_price=np.where(traded, entry, np.nan), exit_price=np.where(traded, exit_px, np.nan),
        entry_underlying=np.where(traded, o_e, np.nan), exit_underlying=np.where(traded, exit_u, np.nan),
        size=size, fees=fees, pnl=pnl, cash=cash_hist, final_cash=cash)


def _first_touch(grid: SessionGrid, ds, rows, e, last, thr) -> np.ndarray:
    """Smallest bar ``j`` in ``[e, last]`` whose adverse extreme (signed) is ``<= thr``; ``last + 1`` if none."""
    tab_l, tab_s = grid.range_min_table("long"), grid.range_min_table("short")
    short = ds < 0
    lo = e.astype(np.int64).copy()
    hi = (last + 1).astype(np.int64).copy()
    n_levels = tab_l.shape[0]
    log2 = np.zeros(grid.width + 2, dtype=np.int64)
    for i in range(2, grid.width + 2):
        log2[i] = log2[i // 2] + 1
    log2 = np.minimum(log2, n_levels - 1)
    while True:
        open_ = lo < hi
        if not open_.any():
            break
        mid = (lo + hi) // 2
        midc = np.minimum(mid, grid.width - 1)
        length = np.maximum(midc - e + 1, 1)
        kk = log2[length]
        b = np.maximum(midc - (1 << kk) + 1, 0)
        m = np.minimum(np.where(short, tab_s[kk, rows, e], tab_l[kk, rows, e]),
                       np.where(short, tab_s[kk, rows, b], tab_l[kk, rows, b]))
        hit = (m <= thr) & open_ & (mid <= last)
        hi = np.where(hit, mid, hi)
        lo = np.where(open_ & ~hit, mid + 1, lo)
    return lo
