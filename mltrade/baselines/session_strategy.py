"""The always-long and random-direction baselines of a daily strategy, as a backtrader strategy.

``mltrade.baselines.runs`` runs it beside the DQN day and night ensembles (intraday strategies' rule
baselines are :class:`~mltrade.strategies.reference.IntradayMomentum` with ``direction_rule``).
"""
from __future__ import annotations

import random

from mltrade.strategies.base import KnockoutStrategy
from mltrade.strategies.decision import Decision

__all__ = ["SessionBaseline"]


class SessionBaseline(KnockoutStrategy):
    """Always-long or random-direction certificates in a daily strategy's session kind.

    ``session="day"``: decided at a session's last bar, bought at the next session's open, sold at its
    close (as the DQN day ensemble). ``"night"``: bought at a session's close, sold at the next session's
    open (as the DQN night ensemble). Barrier ``distance`` and ``stop`` as the strategy's.
    """

    params = (
        ("session", "day"),              # day | night
        ("direction_rule", "long"),      # long | random
        ("seed", 7),                     # seed of the random rule (one draw per decision)
        ("distances", None),             # {decision date: barrier distance} (the DQN ensemble's per-session
                                         # barriers); dates not in it use `distance`
    )
    decision_data = "daily"              # the rule reads no bar (long, or a seeded coin)

    def __init__(self) -> None:
        super().__init__()
        if self.p.session not in ("day", "night"):
            raise ValueError(f"session: expected 'day' or 'night', got {self.p.session!r}")
        if self.p.direction_rule not in ("long", "random"):
            raise ValueError(f"direction_rule: expected long or random, got {self.p.direction_rule!r}")
        self._rng = random.Random(self.p.seed)

    def next(self) -> None:
        super().next()
        if not self.is_last_bar_of_session() or self.is_last_bar_of_data():
            return
        direction = 1 if self.p.direction_rule == "long" else self._rng.choice((1, -1))
        distance = self.p.distance
        if self.p.distances:
            distance = float(self.p.distances.get(self.data.datetime.date(0), distance))
        self.submit_decision(Decision(direction=direction, price=float(self.data.close[0]),
                                      time=self.data.datetime.datetime(0), distance=distance,
                                      stop=self.p.stop, source=f"baseline-{self.p.direction_rule}"))

    def open_knockout(self, direction: int, barrier=None, distance=None, stake=None, size=None, stop=None,
                      product=None, data=None, **kwargs):
        """Day: market order (next open). Night: :meth:`open_overnight` (this close to the next open)."""
        if self.p.session == "night":
            return self.open_overnight(direction, barrier, distance, stake, size, stop, product, data, **kwargs)
        return super().open_knockout(direction, barrier, distance, stake, size, stop, product, data, **kwargs)
