"""The simulation: every parameter set's certificate trade in every session, in four array steps.

1. :func:`_decide`: the product at each deciding (set, session) cell and the entry at the next open;
2. :func:`_exit`: each filled certificate's first touch of ``max(barrier, stop level)`` and its exit;
3. :func:`_cash`: whole certificates, fees and compounding, a loop over sessions vectorised over fills;
4. :func:`_details`: every decision's status and every trade's figures, laid out only when asked.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from mltrade.brokers.vectorised.grid import SessionGrid, session_grid
from mltrade.brokers.vectorised.params import param_sets
from mltrade.brokers.vectorised.result import (EXIT_KNOCKOUT, EXIT_SESSION_END, EXIT_STOP, NO_TRADE, REJECTED_CASH,
                                               REJECTED_KNOCKOUT, TRADED, SweepResult)
from mltrade.brokers.vectorised.signals import SignalFn, momentum_signals, session_signals
from mltrade.products import (ask_price, barrier_from_distance, bid_price, residual_value, round_barrier_safe,
                              underlying_for_bid, unwind_price)

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


def evaluate_bars(bars: pd.DataFrame, sets, direction: Optional[Sequence[int]] = None,
                  distance: Optional[Sequence[float]] = None, exchange: str = "XNAS",
                  interval: int = 5) -> SweepResult:
    """One call for models' signals: per-session ``direction`` (or momentum if None) over ``bars``."""
    grid = session_grid(bars, exchange, interval)
    signal = momentum_signals if direction is None else session_signals(direction, distance)
    return evaluate(grid, sets, signal)


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


@dataclass
class _Decisions:
    """Compact arrays over the cells (set, session) that decide, set-major."""

    cells: np.ndarray
    sets: np.ndarray
    sess: np.ndarray
    ds: np.ndarray          #: direction (float)
    e: np.ndarray           #: entry bar
    strike: np.ndarray
    barrier: np.ndarray
    o_e: np.ndarray         #: underlying at the entry bar's open
    entry: np.ndarray       #: entry ask
    status: np.ndarray      #: NO_TRADE / REJECTED_KNOCKOUT (traded / rejected for cash set later)
    products: tuple         #: (ratio, fx, spread, is_mini): per cell, or a scalar shared by every set


@dataclass
class _Fills:
    """The filled certificates (index ``fi`` into the decisions): entry, exit bar, price, reason."""

    fi: np.ndarray
    sets: np.ndarray
    sess: np.ndarray
    entry_bar: np.ndarray
    entry: np.ndarray
    exit_bar: np.ndarray
    exit_px: np.ndarray
    exit_u: np.ndarray
    reason: np.ndarray


@dataclass
class _Cash:
    """The cash run: fills in session-major ``order``, their sizes, which went through, each set's cash."""

    order: np.ndarray
    size: np.ndarray
    ok: np.ndarray
    fixed: object
    pct: object
    history: np.ndarray     #: (sessions, sets)
    final: np.ndarray


def _decide(p: Dict[str, np.ndarray], grid: SessionGrid, sig, direction: np.ndarray) -> _Decisions:
    """The product at each decision (``KnockoutStrategy.make_product``) and the entry at the next bar's open
    (a knock-out at the open comes first: the order is rejected)."""
    n_p, n_s = direction.shape
    w = grid.width
    cells = np.flatnonzero(direction)
    sets, sess = np.divmod(cells, n_s)
    ds = direction.reshape(-1)[cells].astype(float)
    k = np.clip(_cells(sig.column, (n_p, n_s), cells, sets), 0, w - 1)
    e = np.minimum(k + 1, w - 1)
    dist = _cells(sig.distance, (n_p, n_s), cells, sets)
    ratio, fx, spread = (_per_cell(p[n], sets) for n in ("ratio", "fx", "spread"))
    base = sess * w
    price = grid.close.reshape(-1)[base + k]
    barrier = round_barrier_safe(barrier_from_distance(price, ds, dist), ds, float(p["barrier_step"]))
    is_mini = _per_cell(p["is_mini"], sets)
    strike = np.where(is_mini, barrier / (1.0 + ds * _per_cell(p["barrier_buffer"], sets)), barrier)
    o_e = grid.open.reshape(-1)[base + e]
    ko_open = ds * o_e <= ds * barrier
    entry = ask_price(ds, o_e, strike, ratio, fx)
    status = np.where(ko_open, REJECTED_KNOCKOUT, NO_TRADE).astype(np.int8)
    return _Decisions(cells, sets, sess, ds, e, strike, barrier, o_e, entry, status, (ratio, fx, spread, is_mini))


def _exit(p: Dict[str, np.ndarray], grid: SessionGrid, d: _Decisions) -> _Fills:
    """Each filled certificate's path: the stop level, the first bar reaching ``max(barrier, stop level)``
    (the broker's intra-bar order decides knock-out / stop there), else the session's last close."""
    w = grid.width
    fi = np.flatnonzero((d.status == NO_TRADE) & (d.entry > 0))
    fs, fsess, fd, fe = d.sets[fi], d.sess[fi], d.ds[fi], d.e[fi]
    f_ratio, f_fx, f_spread, f_mini = (v if np.ndim(v) == 0 else v[fi] for v in d.products)
    f_strike, f_barrier, f_entry = d.strike[fi], d.barrier[fi], d.entry[fi]
    stop_price = _per_cell(p["stop"], fs) * f_entry
    has_stop = ~np.isnan(stop_price) & (stop_price > 0)
    with np.errstate(invalid="ignore"):
        level = np.where(has_stop, underlying_for_bid(fd, np.where(has_stop, stop_price, 0.0), f_strike, f_ratio,
                                                      f_fx, f_spread), -fd * np.inf)
    j = grid.first_touch(fsess, fd, fe, np.maximum(fd * f_barrier, fd * level))
    found = j < w
    jj = np.where(found, j, grid.last[fsess])
    at = fsess * w + jj
    o, h, lo, c = (g.reshape(-1)[at] for g in (grid.open, grid.high, grid.low, grid.close))
    open_ko = found & (fd * o <= fd * f_barrier)
    open_stop = found & ~open_ko & (fd * o <= fd * level)
    intra_ko = found & ~open_ko & ~open_stop & (fd * f_barrier >= fd * level)
    intra_stop = found & ~open_ko & ~open_stop & ~intra_ko
    knock = open_ko | intra_ko
    # the bar at ``jj`` is the session's last bar when nothing fired
    exit_px = np.where(open_stop, bid_price(fd, o, f_strike, f_ratio, f_fx, f_spread),
                       bid_price(fd, c, f_strike, f_ratio, f_fx, f_spread))
    exit_u = np.where(open_stop, o, c)
    exit_px = np.where(intra_stop, stop_price, exit_px)
    exit_u = np.where(intra_stop, level, exit_u)
    unwind = unwind_price(fd, f_barrier, o, lo, h, c, str(p["unwind"]), open_ko)
    resid = np.where(f_mini, residual_value(fd, unwind, f_strike, f_ratio, f_fx), 0.0)
    exit_px = np.where(knock, resid, exit_px)
    exit_u = np.where(knock, unwind, exit_u)
    reason = np.where(knock, EXIT_KNOCKOUT, np.where(open_stop | intra_stop, EXIT_STOP, EXIT_SESSION_END))
    return _Fills(fi, fs, fsess, fe, f_entry, jj, exit_px, exit_u, reason)


def _sizing(p: Dict[str, np.ndarray], o_set: np.ndarray, n: int):
    """``KnockoutStrategy.open_knockout``'s budget rule per fill: ``stake``, else ``stake_fraction`` of the
    (flat) account value, else all cash. Returns ``budget(cash, slice, fixed fee)``."""
    stake = _per_cell(p["stake"], o_set)
    frac = _per_cell(np.nan_to_num(p["stake_fraction"], nan=0.0), o_set)
    if np.ndim(stake) == 0 and np.ndim(frac) == 0:
        if stake == stake:
            return lambda cs, sl, fx_: np.minimum(stake, cs) - fx_
        if frac > 0:
            return lambda cs, sl, fx_: np.minimum(frac * cs, cs) - fx_
        return lambda cs, sl, fx_: cs - fx_
    has_stake, use_frac = ~np.isnan(np.broadcast_to(stake, (n,))), np.broadcast_to(frac, (n,)) > 0

    def mixed(cs, sl, fx_):
        st = np.where(has_stake[sl], stake if np.ndim(stake) == 0 else stake[sl],
                      np.where(use_frac[sl], np.minimum((frac if np.ndim(frac) == 0 else frac[sl]) * (cs + 0.0), cs),
                               cs))
        return np.minimum(st, cs) - fx_
    return mixed


def _cash(p: Dict[str, np.ndarray], f: _Fills, n_s: int) -> _Cash:
    """Whole certificates, fees, compounding: a loop over sessions, vectorised over the session's fills."""
    order = np.argsort(f.sess, kind="stable")    # session-major: each session's fills are one slice
    bounds = np.searchsorted(f.sess[order], np.arange(n_s + 1))
    o_set = f.sets[order]
    px_all, xp_all = f.entry[order], f.exit_px[order]
    fee_out = (f.reason != EXIT_KNOCKOUT)[order]
    fixed = _per_cell(p["commission_fixed"], o_set)
    pct = _per_cell(p["commission_pct"], o_set)
    budget = _sizing(p, o_set, len(order))
    unit = px_all * (1.0 + pct)
    no_pct = np.ndim(pct) == 0 and pct == 0.0
    # fees without a percentage part do not depend on the size: fixed in, fixed out unless knocked out
    out_fee0 = np.where(fee_out, fixed, 0.0) if no_pct else None
    n_all = np.zeros(len(order))
    ok_all = np.zeros(len(order), dtype=bool)
    cash = p["cash"][:, 0].astype(float).copy()
    hist = np.empty((n_s, cash.shape[0]))
    with np.errstate(divide="ignore", invalid="ignore"):
        for s in range(n_s):
            a, b = bounds[s], bounds[s + 1]
            if a < b:
                ii, sl = o_set[a:b], slice(a, b)
                cs = cash[ii]
                fx_ = fixed if np.ndim(fixed) == 0 else fixed[a:b]
                n = np.floor(budget(cs, sl, fx_) / unit[a:b] + 1e-9)
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
            hist[s] = cash
    return _Cash(order, n_all, ok_all, fixed, pct, hist, cash)


def _details(d: _Decisions, f: _Fills, c: _Cash) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """Every decision's status and every trade's figures (laid out only when a caller asks)."""
    back = f.fi[c.order]                              # decision index of each fill, session-major
    st = d.status.copy()
    st[back] = np.where(c.ok, TRADED, REJECTED_CASH)
    t = np.flatnonzero(c.ok)
    tf = c.order[t]                                   # index into the filled arrays
    n, px, xp = c.size[t], f.entry[tf], f.exit_px[tf]
    fx_ = c.fixed if np.ndim(c.fixed) == 0 else c.fixed[t]
    pc_ = c.pct if np.ndim(c.pct) == 0 else c.pct[t]
    comm_in = fx_ + pc_ * n * px
    comm_out = np.where(f.reason[tf] != EXIT_KNOCKOUT, fx_ + pc_ * n * xp, 0.0)
    traded = {"cell": d.cells[back[t]], "entry_bar": f.entry_bar[tf], "exit_bar": f.exit_bar[tf],
              "exit_reason": f.reason[tf], "entry_price": px, "exit_price": xp, "entry_underlying": d.o_e[f.fi][tf],
              "exit_underlying": f.exit_u[tf], "size": n, "fees": comm_in + comm_out,
              "pnl": n * xp - n * px - (comm_in + comm_out)}
    return {"cell": d.cells, "status": st, "strike": d.strike, "barrier": d.barrier}, traded


def _evaluate(p: Dict[str, np.ndarray], grid: SessionGrid, signal: SignalFn) -> SweepResult:
    sig = signal(grid, p)
    direction = np.ascontiguousarray(sig.direction, dtype=np.int8)
    d = _decide(p, grid, sig, direction)
    f = _exit(p, grid, d)
    c = _cash(p, f, direction.shape[1])
    return SweepResult(grid, p, direction, lambda: _details(d, f, c), c.history.T, c.final)  # cash: a view
