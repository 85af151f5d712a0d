"""Knock-out finder: binary search over the scroll positions of a venue's certificate list.

The list (Trade Republic style) is sorted by knock-out level, nearest to the
index first (long: descending levels, short: ascending) and rows load lazily
as the page scrolls in fixed steps (800 px). Instead of scrolling from the top
row by row, :class:`KnockoutFinder` bisects the scroll positions: each probe
scrolls once and reads the rows in view, so locating the target barrier takes
O(log n) scroll steps. The search works on any :class:`RowSource`: a plain
Python list (:class:`ListRowSource`, unit tests) or the real page
(``mltrade.live.venues.traderepublic.PageRowSource``).

Selection rules (the original system's defaults, all parameters):

* accept a certificate whose price is at least ``min_price`` (2.00);
* its leverage must not exceed ``leverage_cap`` (45); when no row within
  ``scan_rows`` of the target passes, the cap is relaxed by ``leverage_step``
  (5) up to ``leverage_cap_max`` (70);
* skip illiquid rows whose leverage is below ``illiquid_ratio`` (70 %) of the
  average leverage of their two neighbours;
* when nothing passes because prices are too low, move the target
  ``move_points`` (10 index points) away from the index and search again,
  resuming from the last scroll position instead of from the top.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Protocol


@dataclass(frozen=True)
class Certificate:
    """One row of a venue's knock-out list."""

    index: int          #: 0-based row number in the list
    isin: str
    barrier: float      #: knock-out level (index points)
    price: float        #: ask price in account currency
    leverage: float


class RowSource(Protocol):
    """A lazily loaded, sorted list that can be read one scroll position at a time."""

    rows_per_position: int

    def n_positions(self) -> int: ...

    def rows_at(self, position: int) -> List[Certificate]: ...


class ListRowSource:
    """A :class:`RowSource` over a plain list; counts scroll steps like the page does."""

    def __init__(self, rows: List[Certificate], rows_per_position: int = 20, rows_in_view: int = 25):
        self.rows = list(rows)
        self.rows_per_position = int(rows_per_position)
        self.rows_in_view = int(rows_in_view)
        self.steps = 0

    def n_positions(self) -> int:
        return max(1, -(-len(self.rows) // self.rows_per_position))

    def rows_at(self, position: int) -> List[Certificate]:
        self.steps += 1
        start = position * self.rows_per_position
        return self.rows[start:start + self.rows_in_view]


@dataclass
class FinderRules:
    """The original's selection rules, all tunable."""

    min_price: float = 2.00
    leverage_cap: float = 45.0
    leverage_step: float = 5.0
    leverage_cap_max: float = 70.0
    illiquid_ratio: float = 0.70
    move_points: float = 10.0
    max_moves: int = 50
    scan_rows: int = 15


@dataclass
class FinderResult:
    """What the finder chose and how much scrolling it took."""

    certificate: Optional[Certificate]
    target: float                 #: barrier finally searched for (after moves)
    leverage_cap: Optional[float]
    steps: int                    #: scroll positions probed (page scroll steps)
    moves: int                    #: times the target was moved away from the index
    skipped: Dict[str, int] = field(default_factory=dict)


class FinderError(RuntimeError):
    """The list holds no acceptable certificate on the safe side of the target."""


class KnockoutFinder:
    """Binary search for the certificate nearest to a wanted barrier on the safe side."""

    def __init__(self, source: RowSource, direction: int, rules: Optional[FinderRules] = None):
        if direction not in (1, -1):
            raise ValueError(f"direction: expected +1 (long) or -1 (short), got {direction!r}")
        self.source = source
        self.direction = direction
        self.rules = rules or FinderRules()
        self.position = 0          #: last scroll position used (resume point)
        self.steps = 0
        self._cache: Dict[int, List[Certificate]] = {}
        self._npos: Optional[int] = None

    # -- reading -----------------------------------------------------------
    def _probe(self, position: int) -> List[Certificate]:
        if position not in self._cache:
            self.steps += 1
            self._cache[position] = self.source.rows_at(position)
        return self._cache[position]

    def n_positions(self) -> int:
        if self._npos is None:
            self._npos = self.source.n_positions()
        return self._npos

    def row(self, i: int) -> Optional[Certificate]:
        """Row ``i`` of the list (probing its scroll position if needed), or None past the end."""
        if i < 0:
            return None
        pos = i // self.source.rows_per_position
        if pos >= self.n_positions():
            return None
        for r in self._probe(pos):
            if r.index == i:
                return r
        return None

    def _safe(self, barrier: float, target: float) -> bool:
        return barrier <= target if self.direction > 0 else barrier >= target

    # -- searching ---------------------------------------------------------
    def locate(self, target: float, start: int = 0) -> Optional[int]:
        """Index of the first row on the safe side of ``target``, bisecting positions from ``start``."""
        lo, hi = max(0, start), self.n_positions() - 1
        if lo > hi:
            return None
        # smallest position whose last visible row is on the safe side
        while lo < hi:
            mid = (lo + hi) // 2
            rows = self._probe(mid)
            if rows and self._safe(rows[-1].barrier, target):
                hi = mid
            else:
                lo = mid + 1
        self.position = lo
        for r in self._probe(lo):
            if self._safe(r.barrier, target):
                return r.index
        return None

    def locate_linear(self, target: float, start: int = 0) -> Optional[int]:
        """Baseline: scroll one step at a time from ``start`` (what a naive bot does)."""
        for pos in range(max(0, start), self.n_positions()):
            for r in self._probe(pos):
                if self._safe(r.barrier, target):
                    self.position = pos
                    return r.index
        return None

    def illiquid(self, i: int) -> bool:
        """Row ``i``'s leverage is below ``illiquid_ratio`` of its neighbours' average."""
        me = self.row(i)
        neigh = [r.leverage for r in (self.row(i - 1), self.row(i + 1)) if r is not None]
        if me is None or not neigh:
            return False
        return me.leverage < self.rules.illiquid_ratio * (sum(neigh) / len(neigh))

    def find(self, target: float, index_price: Optional[float] = None, linear: bool = False) -> FinderResult:
        """Choose a certificate for a wanted barrier ``target``; resumes from the last position."""
        rules = self.rules
        if index_price is not None:
            if self.direction > 0 and not target < index_price:
                raise ValueError(f"target: a long barrier must lie below the index {index_price}, "
                                 f"got {target}")
            if self.direction < 0 and not target > index_price:
                raise ValueError(f"target: a short barrier must lie above the index {index_price}, "
                                 f"got {target}")
        skipped = {"price": 0, "leverage": 0, "illiquid": 0}
        moves = 0
        start_steps = self.steps
        while moves <= rules.max_moves:
            locate = self.locate_linear if linear else self.locate
            first = locate(target, self.position)
            if first is None:
                break
            candidates = [r for r in (self.row(first + k) for k in range(rules.scan_rows)) if r is not None]
            cap = rules.leverage_cap
            too_cheap = False
            while cap <= rules.leverage_cap_max + 1e-9:
                for r in candidates:
                    if r.price < rules.min_price:
                        skipped["price"] += 1
                        too_cheap = True
                        continue
                    if r.leverage > cap:
                        skipped["leverage"] += 1
                        continue
                    if self.illiquid(r.index):
                        skipped["illiquid"] += 1
                        continue
                    self.position = r.index // self.source.rows_per_position
                    return FinderResult(r, target, cap, self.steps - start_steps, moves, skipped)
                cap += rules.leverage_step
            if not too_cheap and not candidates:
                break
            # prices too low (or nothing passed): move the target away from the index and resume
            target = target - self.direction * rules.move_points
            moves += 1
        return FinderResult(None, target, None, self.steps - start_steps, moves, skipped)
