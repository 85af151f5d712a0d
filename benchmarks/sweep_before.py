"""Today's (before) sweep evaluator core, frozen for ``bench_sweep.py``: it prints sets/s of this path beside the new one.

A copy of ``mltrade/sweep/evaluator.py``'s evaluation as it stood before the
running-extreme look-ups (full ``(sets, sessions)`` arrays, a bisection over a
range-minimum sparse table per certificate). It shares the grid, parameter
normalisation and product pricing with the package and returns the same
figures, so the benchmark also checks that both paths agree cell for cell.
"""
from __future__ import annotations

import types
from typing import Dict

import numpy as np

from mltrade.products import (ask_price, barrier_from_distance, bid_price, residual_value, round_barrier_safe,
                              underlying_for_bid, unwind_price)
from mltrade.brokers.vectorised import (EXIT_KNOCKOUT, EXIT_NONE, EXIT_SESSION_END, EXIT_STOP, NO_TRADE,
                                       REJECTED_CASH, REJECTED_KNOCKOUT, RULE_LONG, RULE_RANDOM, TRADED,
                                       SessionGrid, Signals, random_directions)

SignalFn = object


def SweepResult(**kw):  # noqa: N802 - the frozen code builds its result with this name
    """The before path's result: a plain namespace of full ``(sets, sessions)`` arrays."""
    return types.SimpleNamespace(**kw)


class _BeforeGrid:
    """The grid's arrays plus the before path's range-minimum sparse tables."""

    def __init__(self, grid: SessionGrid) -> None:
        for name in ("open", "high", "low", "close", "first", "last", "width", "n_sessions"):
            setattr(self, name, getattr(grid, name))
        self._tables: Dict[str, np.ndarray] = {}

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


def momentum_signals(grid, p: Dict[str, np.ndarray]) -> Signals:
    """Before: ``IntradayMomentum``'s signals built on full ``(sets, sessions)`` arrays."""
    k = np.broadcast_to((p["decision_bar"] - 1).astype(int), (p["decision_bar"].shape[0], grid.n_sessions))
    ok = (k >= grid.first[None, :]) & (k < grid.last[None, :])
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


def evaluate_before(grid: SessionGrid, p: Dict[str, np.ndarray], signal=momentum_signals):
    """The before path on ``grid`` for normalised parameter sets ``p`` (``param_sets``)."""
    return _evaluate(p, _BeforeGrid(grid), signal)


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
