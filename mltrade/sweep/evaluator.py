"""Vectorised knock-out evaluator: many parameter sets over many sessions at once, equal to the broker.

For every parameter set ``p`` and session ``s`` it computes the trade an
intraday strategy makes under ``KnockoutBroker`` (decide on the close of
session bar ``decision_bar - 1``, buy at the next bar's open at the ask, hold
until the stop, the knock-out or the session's last close) with numpy arrays
over the (set, session) cells that decide:

* decision price, barrier (``barrier_from_distance`` + ``round_barrier_safe``), strike;
* knock-out at the entry bar's open (order rejected) and the entry ask;
* the first bar whose adverse extreme reaches ``max(barrier, stop level)`` in
  the certificate's direction: a look-up along the session's running-extreme
  records after the entry bar (:meth:`SessionGrid.first_touch`, built once per
  grid; no per-bar Python loop); at that bar the broker's intra-bar order
  (:mod:`mltrade.brokers.intrabar`: open first, knock-out before stop at the
  open, then the nearer level first) decides knock-out / stop and the price;
* exits at the session's last close at the bid otherwise.

``IntradayMomentum``'s ``direction_rule`` (``momentum``, ``long``, ``random`` with
its ``seed``) is a per-set parameter; the random rule replays the strategy's
``random.Random(seed).choice`` sequence, one draw per decision.

Only the per-certificate path is vectorised over sessions; the cash (whole
certificates, fees, compounding) is a cheap loop over sessions vectorised
over the session's fills. Every price comes from :mod:`mltrade.products`.

Financing: the broker moves a mini future's financing level once per UTC
calendar day from the day it was ordered. An intraday trade never spans a UTC
day change (``session_grid`` checks that every session lies within one UTC
day), so intraday trades carry no financing; the financing parameters are
accepted and validated for the day a sweep spans sessions overnight.
"""
from __future__ import annotations

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
                if isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_)):
                    seeds.append(int(x))     # any size: random.Random takes arbitrary integers
                elif isinstance(x, (float, np.floating)) and np.isfinite(x) and float(x).is_integer():
                    seeds.append(int(x))
                else:
                    raise ValueError(f"params: set {i}: seed = {x!r}, expected an integer (the random "
                                     f"direction rule must be reproducible)")
            big = any(abs(x) >= 2 ** 63 for x in seeds)
            out["seed"] = np.asarray(seeds, dtype=object if big else np.int64)[:, None]
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
    """Per (set, session): direction (+1/-1, 0 = no trade), decision bar number, barrier distance.

    Each array is ``(n_sets, n_sessions)`` or broadcastable to it (e.g. ``(n_sets, 1)``
    for a decision bar per set).
    """

    direction: np.ndarray
    column: np.ndarray
    distance: np.ndarray


SignalFn = Callable[[SessionGrid, Dict[str, np.ndarray]], Signals]


def _grid_table(grid: SessionGrid, name: str) -> np.ndarray:
    """Per-grid ``(width, n_sessions)`` look-up tables indexed by decision column (cached on the grid)."""
    if name not in grid._tables:
        cols = np.arange(grid.width)[:, None]
        if name == "decidable":     # a present bar that is neither the session's nor the data's last bar
            t = (cols >= grid.first[None, :]) & (cols < grid.last[None, :])
        elif name == "momentum_ok":  # ... of a session seen from its first bar
            t = _grid_table(grid, "decidable") & (grid.first == 0)[None, :]
        elif name == "move":         # the session's move up to the close of each bar
            with np.errstate(invalid="ignore", divide="ignore"):
                t = np.ascontiguousarray((grid.close / grid.open[:, :1] - 1.0).T)
        elif name == "abs_move":
            t = np.abs(_grid_table(grid, "move"))
        elif name == "up":
            t = np.where(_grid_table(grid, "move") > 0, 1, -1).astype(np.int8)
        else:
            raise KeyError(name)
        grid._tables[name] = t
    return grid._tables[name]


def _decision_column(grid: SessionGrid, p: Dict[str, np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Decision column per set ``(n_sets, 1)`` and where it can decide ``(n_sets, n_sessions)``."""
    k = (p["decision_bar"] - 1).astype(np.int64)
    return k, _grid_table(grid, "decidable")[np.clip(k[:, 0], 0, grid.width - 1)]


def momentum_signals(grid: SessionGrid, p: Dict[str, np.ndarray]) -> Signals:
    """``IntradayMomentum``: decide where the session's move so far is at least ``min_move``.

    The direction follows ``direction_rule``: ``momentum`` (long if the session is
    up at the decision bar's close, short if not), ``long``, or ``random``
    (see :func:`random_directions`).
    """
    k = (p["decision_bar"] - 1).astype(np.int64)
    kc = np.clip(k[:, 0], 0, grid.width - 1)
    ok = _grid_table(grid, "momentum_ok")[kc]
    mm = p["min_move"]
    if (mm > 0).any():
        ok &= ~(_grid_table(grid, "abs_move")[kc] < mm)
    direction = _grid_table(grid, "up")[kc]
    rule = p.get("rule")
    if rule is not None and (rule != RULE_MOMENTUM).any():
        rule = rule[:, 0]
        direction[rule == RULE_LONG] = 1
        rnd = rule == RULE_RANDOM
        if rnd.any():
            seeds = np.broadcast_to(p["seed"], (k.shape[0], 1))[rnd, 0]
            direction[rnd] = random_directions(ok[rnd], seeds)
    direction[~ok] = 0
    return Signals(direction, k, p["distance"])


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
        d = np.where(ok, np.broadcast_to(dirs, ok.shape), 0).astype(np.int8)
        base = np.broadcast_to(p["distance"], ok.shape)
        dd = base if dist is None else np.where(np.isnan(dist), base, np.broadcast_to(dist, ok.shape))
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
#: per-trade fields of :class:`SweepResult` (materialised as ``(n_sets, n_sessions)`` arrays on first access)
_TRADE_FIELDS = {  # name: (fill value, dtype)
    "entry_bar": (-1, np.int64), "exit_bar": (-1, np.int64), "exit_reason": (EXIT_NONE, np.int8),
    "entry_price": (np.nan, float), "exit_price": (np.nan, float), "entry_underlying": (np.nan, float),
    "exit_underlying": (np.nan, float), "size": (0.0, float), "fees": (0.0, float), "pnl": (0.0, float),
}
_ACTIVE_FIELDS = {"status": (NO_TRADE, np.int8), "strike": (np.nan, float), "barrier": (np.nan, float)}


class SweepResult:
    """Trades of every set in every session and each set's cash.

    ``status``, ``direction``, ``entry_bar`` ... ``pnl`` are ``(n_sets, n_sessions)``
    arrays; the evaluator keeps them compact (one entry per decision or trade)
    and lays them out on first access. ``cash`` (after each session) and
    ``final_cash`` are computed eagerly.
    """

    def __init__(self, grid: SessionGrid, params: Dict[str, np.ndarray], direction: np.ndarray,
                 details: Callable[[], Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]], cash: np.ndarray,
                 final_cash: np.ndarray) -> None:
        self.grid, self.params, self.direction = grid, params, direction
        self.cash, self.final_cash = cash, final_cash       #: cash after each session / at the end
        self._details = details     # -> (per decision, per trade) compact arrays; "cell" = set * n_sessions + session
        self._compact: Optional[Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]] = None
        self._full: Dict[str, np.ndarray] = {}

    def compact(self) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
        """``(decisions, trades)``: one entry per decision / filled trade, ``cell`` = set * n_sessions + session."""
        if self._compact is None:
            self._compact = self._details()
        return self._compact

    def __getattr__(self, name: str) -> np.ndarray:
        spec = _TRADE_FIELDS.get(name), _ACTIVE_FIELDS.get(name)
        if name.startswith("_") or spec == (None, None):
            raise AttributeError(name)
        if name not in self._full:
            src = self.compact()[1 if spec[0] else 0]
            fill, dtype = spec[0] or spec[1]
            out = np.full(self.direction.size, fill, dtype=dtype)
            out[src["cell"]] = src[name]
            self._full[name] = out.reshape(self.direction.shape)
        return self._full[name]

    @property
    def n_sets(self) -> int:
        """Number of parameter sets (rows)."""
        return self.direction.shape[0]

    def total_return(self) -> np.ndarray:
        """Final cash over starting cash, minus 1, per set."""
        return self.final_cash / self.params["cash"][:, 0] - 1.0

    def trade_count(self) -> np.ndarray:
        """Filled trades per set."""
        return np.bincount(self.compact()[1]["cell"] // max(self.direction.shape[1], 1), minlength=self.n_sets)

    def session_returns(self) -> np.ndarray:
        """Per-session relative change of the cash (n_sets, n_sessions)."""
        after = self.cash.T                                   # sessions x sets: contiguous as computed
        prev = np.concatenate([self.params["cash"].T, after[:-1]], axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(prev > 0, after / prev - 1.0, 0.0).T

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

    @staticmethod
    def concat(parts: Sequence["SweepResult"], params: Dict[str, np.ndarray]) -> "SweepResult":
        """Join results over consecutive chunks of sets (same grid) into one."""
        n_s = parts[0].direction.shape[1]
        offs = np.cumsum([0] + [r.n_sets for r in parts[:-1]]) * n_s

        def details() -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
            both = [r.compact() for r in parts]
            out = []
            for which in (0, 1):
                d = {k: np.concatenate([c[which][k] for c in both]) for k in both[0][which] if k != "cell"}
                d["cell"] = np.concatenate([c[which]["cell"] + o for c, o in zip(both, offs)])
                out.append(d)
            return out[0], out[1]
        return SweepResult(parts[0].grid, params, np.concatenate([r.direction for r in parts]), details,
                           np.concatenate([r.cash for r in parts]), np.concatenate([r.final_cash for r in parts]))


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
        return SweepResult.concat(parts, p)
    return _evaluate(p, grid, signal)


def _per_cell(a: np.ndarray, idx: np.ndarray):
    """A per-set parameter (``(n_sets, 1)``) at each cell: a scalar when every set shares it."""
    v = a[:, 0]
    if len(v) and ((v == v[0]).all() or (v.dtype.kind == "f" and np.isnan(v).all())):
        return v[0]
    return v[idx]


def _cells(a: np.ndarray, shape: Tuple[int, int], cells: np.ndarray, sets: np.ndarray) -> np.ndarray:
    """``a`` (broadcastable to ``shape``) at flat cells; a per-set column needs no full-size copy."""
    a = np.asarray(a)
    if a.ndim == 2 and a.shape[1] == 1:
        return a[:, 0][sets]
    b = np.broadcast_to(a, shape)
    if b.strides[1] == 0:
        return b[:, 0][sets]
    return b.reshape(-1)[cells]


def _evaluate(p: Dict[str, np.ndarray], grid: SessionGrid, signal: SignalFn) -> SweepResult:
    sig = signal(grid, p)
    direction = np.ascontiguousarray(sig.direction, dtype=np.int8)
    n_p, n_s = direction.shape
    w = grid.width
    # ---- decisions: compact arrays over the cells (set, session) that decide, set-major
    cells = np.flatnonzero(direction)
    sets, sess = np.divmod(cells, n_s)
    ds = direction.reshape(-1)[cells].astype(float)
    k = np.clip(_cells(sig.column, (n_p, n_s), cells, sets), 0, w - 1)
    e = np.minimum(k + 1, w - 1)
    dist = _cells(sig.distance, (n_p, n_s), cells, sets)
    ratio, fx, spread = (_per_cell(p[n], sets) for n in ("ratio", "fx", "spread"))
    base = sess * w
    # ---- product at the decision (KnockoutStrategy.make_product -> KnockoutProduct.for_index)
    price = grid.close.reshape(-1)[base + k]
    barrier = round_barrier_safe(barrier_from_distance(price, ds, dist), ds, float(p["barrier_step"]))
    is_mini = _per_cell(p["is_mini"], sets)
    strike = np.where(is_mini, barrier / (1.0 + ds * _per_cell(p["barrier_buffer"], sets)), barrier)
    # ---- entry at the next bar's open (knock-out at the open comes first)
    o_e = grid.open.reshape(-1)[base + e]
    ko_open = ds * o_e <= ds * barrier
    entry = ask_price(ds, o_e, strike, ratio, fx)
    status = np.where(ko_open, REJECTED_KNOCKOUT, NO_TRADE).astype(np.int8)
    fi = np.flatnonzero(~ko_open & (entry > 0))    # filled: index into the decision cells
    # ---- the filled certificates' path: stop level, first bar reaching max(barrier, stop level)
    fs, fsess, fd, fe = sets[fi], sess[fi], ds[fi], e[fi]
    f_ratio, f_fx, f_spread, f_mini = (v if np.ndim(v) == 0 else v[fi] for v in (ratio, fx, spread, is_mini))
    f_strike, f_barrier, f_entry = strike[fi], barrier[fi], entry[fi]
    stop_price = _per_cell(p["stop"], fs) * f_entry
    has_stop = ~np.isnan(stop_price) & (stop_price > 0)
    with np.errstate(invalid="ignore"):
        level = np.where(has_stop, underlying_for_bid(fd, np.where(has_stop, stop_price, 0.0), f_strike, f_ratio,
                                                      f_fx, f_spread), -fd * np.inf)
    j = grid.first_touch(fsess, fd, fe, np.maximum(fd * f_barrier, fd * level))
    found = j < w
    last = grid.last[fsess]
    jj = np.where(found, j, last)
    at = fsess * w + jj
    o, h, lo, c = (g.reshape(-1)[at] for g in (grid.open, grid.high, grid.low, grid.close))
    open_ko = found & (fd * o <= fd * f_barrier)
    open_stop = found & ~open_ko & (fd * o <= fd * level)
    intra_ko = found & ~open_ko & ~open_stop & (fd * f_barrier >= fd * level)
    intra_stop = found & ~open_ko & ~open_stop & ~intra_ko
    knock = open_ko | intra_ko
    # ---- exit price per certificate (the bar at ``jj`` is the session's last bar when nothing fired)
    exit_px = bid_price(fd, c, f_strike, f_ratio, f_fx, f_spread)
    exit_u = c.copy()
    exit_px = np.where(open_stop, bid_price(fd, o, f_strike, f_ratio, f_fx, f_spread), exit_px)
    exit_u = np.where(open_stop, o, exit_u)
    exit_px = np.where(intra_stop, stop_price, exit_px)
    exit_u = np.where(intra_stop, level, exit_u)
    unwind = unwind_price(fd, f_barrier, o, lo, h, c, str(p["unwind"]), open_ko)
    resid = np.where(f_mini, residual_value(fd, unwind, f_strike, f_ratio, f_fx), 0.0)
    exit_px = np.where(knock, resid, exit_px)
    exit_u = np.where(knock, unwind, exit_u)
    reason = np.where(knock, EXIT_KNOCKOUT, np.where(open_stop | intra_stop, EXIT_STOP, EXIT_SESSION_END))
    # ---- cash: whole certificates, fees, compounding (loop over sessions, vectorised over the session's fills)
    order = np.argsort(fsess, kind="stable")    # session-major: each session's fills are one slice
    bounds = np.searchsorted(fsess[order], np.arange(n_s + 1))
    o_set = fs[order]
    px_all, xp_all = f_entry[order], exit_px[order]
    fee_out = (reason != EXIT_KNOCKOUT)[order]
    fixed = _per_cell(p["commission_fixed"], o_set)
    pct = _per_cell(p["commission_pct"], o_set)
    stake = _per_cell(p["stake"], o_set)
    frac = _per_cell(np.nan_to_num(p["stake_fraction"], nan=0.0), o_set)
    unit = px_all * (1.0 + pct)
    # KnockoutStrategy.open_knockout: stake, else stake_fraction of the (flat) account value, else all cash
    if np.ndim(stake) == 0 and np.ndim(frac) == 0:
        mode = "stake" if stake == stake else ("fraction" if frac > 0 else "cash")
    else:
        mode = "mixed"
        has_stake, use_frac = ~np.isnan(np.broadcast_to(stake, px_all.shape)), np.broadcast_to(frac, px_all.shape) > 0
    no_pct = np.ndim(pct) == 0 and pct == 0.0
    # fees without a percentage part do not depend on the size: fixed in, fixed out unless knocked out
    out_fee0 = np.where(fee_out, fixed, 0.0) if no_pct else None
    n_all = np.zeros(len(order))
    ok_all = np.zeros(len(order), dtype=bool)
    cash = p["cash"][:, 0].astype(float).copy()
    cash_hist = np.empty((n_s, n_p))
    with np.errstate(divide="ignore", invalid="ignore"):
        for s in range(n_s):
            a, b = bounds[s], bounds[s + 1]
            if a < b:
                ii = o_set[a:b]
                cs = cash[ii]
                fx_ = fixed if np.ndim(fixed) == 0 else fixed[a:b]
                if mode == "cash":
                    budget = cs - fx_
                elif mode == "fraction":
                    budget = np.minimum(frac * cs, cs) - fx_
                elif mode == "stake":
                    budget = np.minimum(stake, cs) - fx_
                else:
                    st = np.where(has_stake[a:b], stake if np.ndim(stake) == 0 else stake[a:b],
                                  np.where(use_frac[a:b], np.minimum((frac if np.ndim(frac) == 0 else frac[a:b])
                                                                     * (cs + 0.0), cs), cs))
                    budget = np.minimum(st, cs) - fx_
                n = np.floor(budget / unit[a:b] + 1e-9)
                px, xp = px_all[a:b], xp_all[a:b]
                if no_pct:
                    cost = n * px + fx_
                    comm_out = out_fee0[a:b]
                else:
                    pc_ = pct if np.ndim(pct) == 0 else pct[a:b]
                    cost = n * px + (fx_ + pc_ * n * px)
                    comm_out = np.where(fee_out[a:b], fx_ + pc_ * n * xp, 0.0)
                ok = (n > 0) & (cost <= cs + 1e-9)       # every figure here is finite
                cash[ii] = np.where(ok, (cs - cost) + (n * xp - comm_out), cs)
                n_all[a:b] = n
                ok_all[a:b] = ok
            cash_hist[s] = cash

    def details() -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
        """Every decision's status and every trade's figures (laid out only when a caller asks)."""
        back = fi[order]                                  # decision index of each fill, session-major
        st = status.copy()
        st[back] = np.where(ok_all, TRADED, REJECTED_CASH)
        t = np.flatnonzero(ok_all)
        tf = order[t]                                     # index into the filled arrays
        n, px, xp = n_all[t], px_all[t], xp_all[t]
        fx_ = fixed if np.ndim(fixed) == 0 else fixed[t]
        pc_ = pct if np.ndim(pct) == 0 else pct[t]
        comm_in = fx_ + pc_ * n * px
        comm_out = np.where(fee_out[t], fx_ + pc_ * n * xp, 0.0)
        traded = {"cell": cells[back[t]], "entry_bar": fe[tf], "exit_bar": jj[tf], "exit_reason": reason[tf],
                  "entry_price": px, "exit_price": xp, "entry_underlying": o_e[fi][tf],
                  "exit_underlying": exit_u[tf], "size": n, "fees": comm_in + comm_out,
                  "pnl": n * xp - n * px - (comm_in + comm_out)}
        return {"cell": cells, "status": st, "strike": strike, "barrier": barrier}, traded

    return SweepResult(grid, p, direction, details, cash_hist.T, cash)   # cash: a (sets, sessions) view
