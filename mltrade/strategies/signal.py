"""``SignalStrategy``: trades a given per-session signal (direction, optional barrier distance).

The reference run for the vectorised sweep evaluator (:mod:`mltrade.brokers.vectorised`):
on the close of session bar ``decision_bar - 1`` it opens the session's
certificate (filled at the next bar's open), holds it until the stop, the
knock-out or the session's last bar, exactly like ``IntradayMomentum`` but with
the direction taken from ``signals`` instead of the session's move.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Tuple, Union

from mltrade.strategies.base import KnockoutStrategy
from mltrade.strategies.decision import Decision

SignalValue = Union[int, Tuple[int, Optional[float]]]


def normalise_signals(signals: Mapping) -> dict:
    """``{session date: direction | (direction, distance)}`` -> ``{"YYYY-MM-DD": (direction, distance|None)}``."""
    out = {}
    for key, value in dict(signals or {}).items():
        day = str(key)[:10]
        if isinstance(value, (tuple, list)):
            if len(value) != 2:
                raise ValueError(f"signals[{day}]: expected direction or (direction, distance), got {value!r}")
            direction, distance = value
        else:
            direction, distance = value, None
        if direction not in (-1, 0, 1):
            raise ValueError(f"signals[{day}]: direction must be -1, 0 or +1, got {direction!r}")
        if distance is not None and (isinstance(distance, float) and math.isnan(distance)):
            distance = None
        if distance is not None and not 0 < float(distance) < 1:
            raise ValueError(f"signals[{day}]: distance must be a fraction in (0, 1), got {distance!r}")
        out[day] = (int(direction), None if distance is None else float(distance))
    return out


class SignalStrategy(KnockoutStrategy):
    """Opens each session's signalled certificate after ``decision_bar`` candles; flat at the close."""

    params = (
        ("signals", None),        # {session date: direction or (direction, distance)}
        ("decision_bar", 17),     # decide on the close of this many completed candles
    )

    def __init__(self) -> None:
        super().__init__()
        self._signals = normalise_signals(self.p.signals or {})
        if int(self.p.decision_bar) < 1:
            raise ValueError(f"decision_bar: expected >= 1, got {self.p.decision_bar!r}")

    def on_bar(self) -> None:
        """On the decision bar, open the session's signalled certificate (if any)."""
        if self.session_bar() != int(self.p.decision_bar) - 1 or self.has_position():
            return
        direction, distance = self._signals.get(str(self.data.datetime.date(0)), (0, None))
        if not direction:
            return
        price = float(self.data.close[0])
        self.submit_decision(Decision(direction=direction, price=price, time=self.data.datetime.datetime(0),
                                      distance=self.p.distance if distance is None else distance,
                                      stop=self.p.stop, source="signal"))
