"""Reference strategies without ML: the original's intraday mechanics and the index baseline.

The always-long / random baselines of daily strategies are :mod:`mltrade.baselines.session_strategy`.
"""
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
