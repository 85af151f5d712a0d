"""The path a certificate's underlying takes inside one bar, and the order of events on it.

A bar only tells open, high, low and close. To decide what happened first
(a limit fill, a stop, a knock-out) we walk a documented path:

    open  →  the extreme adverse to the certificate  →  the other extreme  →  close

i.e. long certificates see ``open → low → high → close`` and short ones
``open → high → low → close`` (the pessimistic order). Each segment is
monotone, so events on it fire in the order the price reaches their levels.
Events already true at the open fire at the open (gaps) before anything else.
Used by ``KnockoutBroker``; the vectorised sweep evaluator applies the same path.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Sequence

#: tie-break at equal levels: knock-out first, then stops, then limits, then market orders
PRIORITY_KNOCKOUT, PRIORITY_STOP, PRIORITY_LIMIT, PRIORITY_MARKET = 0, 1, 2, 3


@dataclass
class Trigger:
    """Fires when the underlying reaches ``level`` moving in direction ``side`` (-1 down, +1 up).

    ``level=None`` marks a market order: it fires at the open only.
    """

    key: Any
    level: float | None
    side: int
    priority: int

    def holds_at(self, price: float) -> bool:
        if self.level is None:
            return True
        return price <= self.level if self.side < 0 else price >= self.level


def bar_path(direction: int, o: float, h: float, low: float, c: float) -> List[float]:
    """The four points of the walk for a certificate of ``direction``."""
    return [o, low, h, c] if direction > 0 else [o, h, low, c]


def walk_bar(points: Sequence[float], triggers: Callable[[], List[Trigger]],
             fire: Callable[[Trigger, float, bool], None], max_events: int = 10_000) -> None:
    """Walk ``points`` and call ``fire(trigger, underlying_level, at_open)`` in event order.

    ``triggers()`` is asked again after each event, so a fill may add a stop
    or a knock-out may remove every other order. A trigger fires at most once.
    """
    fired: set = set()

    def live() -> List[Trigger]:
        return [t for t in triggers() if id(t.key) not in fired]

    open_ = points[0]
    for _ in range(max_events):
        now = sorted((t for t in live() if t.holds_at(open_)), key=lambda t: t.priority)
        if not now:
            break
        fired.add(id(now[0].key))
        fire(now[0], open_, True)
    for a, b in zip(points[:-1], points[1:]):
        if a == b:
            continue
        side = -1 if b < a else 1
        cur = a
        for _ in range(max_events):
            cands = [t for t in live() if t.level is not None and t.side == side
                     and (b <= t.level <= cur if side < 0 else cur <= t.level <= b)]
            if not cands:
                break
            # nearest level in the direction of travel; ties by priority
            t = min(cands, key=lambda t: (side * t.level, t.priority))
            fired.add(id(t.key))
            fire(t, t.level, False)
            cur = t.level
