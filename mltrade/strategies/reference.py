"""Reference strategies without ML: the original's intraday mechanics and the index baseline."""
from __future__ import annotations

import random

import backtrader as bt

from mltrade.strategies.base import KnockoutStrategy
from mltrade.strategies.decision import Decision


class IntradayMomentum(KnockoutStrategy):
    """After ``decision_bar`` candles go long if the session is up so far, else short; flat at the close.

    Barrier ``distance`` from the index, stop at ``stop`` of the entry price (defaults: 17 candles, 4 %, 0.71).
    ``direction_rule`` turns it into the baselines: ``long`` (always long) or ``random`` (seeded coin).
    """

    params = (
        ("decision_bar", 17),      # decide after this many completed candles of the session
        ("min_move", 0.0),         # no trade unless |session return| exceeds this fraction
        ("direction_rule", "momentum"),  # momentum | long | random
        ("seed", 7),               # seed of the random direction rule
    )
    param_space = {
        "decision_bar": (3, 60, 1),
        "distance": (0.01, 0.10),
        "stop": (0.3, 0.95),
        "min_move": (0.0, 0.01),
    }

    def __init__(self) -> None:
        super().__init__()
        self._session_open = None
        if self.p.direction_rule not in ("momentum", "long", "random"):
            raise ValueError(f"direction_rule: expected momentum, long or random, got {self.p.direction_rule!r}")
        self._rng = random.Random(self.p.seed)

    def on_bar(self) -> None:
        if self.session_bar() == 0:
            self._session_open = float(self.data.open[0])
        if self._session_open is None or self.session_bar() != self.p.decision_bar - 1 or self.has_position():
            return
        price = float(self.data.close[0])
        move = price / self._session_open - 1.0
        if abs(move) < self.p.min_move:
            return
        if self.p.direction_rule == "long":
            direction = 1
        elif self.p.direction_rule == "random":
            direction = self._rng.choice((1, -1))
        else:
            direction = 1 if move > 0 else -1
        self.submit_decision(Decision(direction=direction, price=price, time=self.data.datetime.datetime(0),
                                      distance=self.p.distance, stop=self.p.stop, source="momentum",
                                      info={"session_move": move}))


class BuyAndHold(KnockoutStrategy):
    """Index baseline, fully invested: at the first bar's close buy a tracker (strike 0, no knock-out, no
    spread) with all cash and sell it at the last bar's close. The small ``ratio`` (1e-4 certificates per
    index point) keeps the cash left over by whole certificates under 0.01 %, so the return equals the
    index's up to the two order fees."""

    params = (("ratio", 1e-4), ("spread", 0.0), ("stop", None), ("flat_at_session_end", False))
    decision_data = "daily"          # no decision at all: bought at the first close
    #: a tracker, not a certificate: the [product] section (turbo ratio, spread) does not apply
    uses_product_config = False

    def __init__(self) -> None:
        super().__init__()
        self._bought = False

    def on_bar(self) -> None:
        if self._bought:
            return
        self._bought = True
        product = self.make_product(1, barrier=0.0)
        self.open_knockout(1, product=product, stake=self.broker.getcash(), exectype=bt.Order.Close)

    def next(self) -> None:
        if self.is_last_bar_of_data() and self.has_position():
            self.close_knockout(at_close=True, reason="session_end")
            return
        self.on_bar()


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
