"""Signals: per (set, session) direction, decision column and barrier distance, as the kernel takes them."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from mltrade.brokers.vectorised.grid import SessionGrid
from mltrade.brokers.vectorised.params import RULE_LONG, RULE_MOMENTUM, RULE_RANDOM


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
