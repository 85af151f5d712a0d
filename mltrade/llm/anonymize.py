"""Anonymised prompts: a model may not recall how a day ended from its date or its index level.

With ``[llm] anonymize = true`` (the default in backtests) every prompt shows
times of day only (no calendar date, no weekday) and every price moved by one
affine map per run, ``shown = scale * real + shift``. The map is drawn from the
run's seed and the first reviewed price, so the reference level lands 1.25 to
3 times above or below the real one, with a shift of up to 10 % on top: no
shown price sits near a real level, while every distance keeps its order (a
barrier further away stays further away), so the contract's rules read the
same. The overlay maps the model's barrier back with :meth:`PriceMap.to_real`
and checks every rule on real prices.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Optional

import pandas as pd

from mltrade.llm.contract import Candle, ContractError, LLMRequest

#: the shown reference level is this factor (or its inverse) away from the real one
LEVEL_FACTOR = (1.25, 3.0)
#: largest shift, as a fraction of the shown reference level
MAX_SHIFT = 0.10


@dataclass(frozen=True)
class PriceMap:
    """``shown = scale * real + shift`` (``scale > 0``, so every order of prices is kept)."""

    scale: float
    shift: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and self.scale > 0 and math.isfinite(self.shift)):
            raise ValueError(f"PriceMap: expected a positive finite scale and a finite shift, got {self}")

    @classmethod
    def draw(cls, seed: int, reference: float) -> "PriceMap":
        """The run's map from ``seed`` and a reference price (the first reviewed decision's)."""
        if not (math.isfinite(reference) and reference > 0):
            raise ValueError(f"reference price: expected a positive number, got {reference!r}")
        rng = random.Random(int(seed))
        factor = math.exp(rng.uniform(math.log(LEVEL_FACTOR[0]), math.log(LEVEL_FACTOR[1])))
        if rng.random() < 0.5:
            factor = 1.0 / factor
        u = rng.uniform(-MAX_SHIFT, MAX_SHIFT)
        # shown reference = factor * reference, of which u is the shift
        return cls(scale=factor * (1.0 - u), shift=u * factor * reference)

    def to_prompt(self, real: float) -> float:
        return self.scale * float(real) + self.shift

    def to_real(self, shown: float) -> float:
        return (float(shown) - self.shift) / self.scale


def clock(t: Optional[str]) -> Optional[str]:
    """``HH:MM`` of an ISO time (exchange-local), dropping the date, weekday and UTC offset."""
    if t is None:
        return None
    ts = pd.Timestamp(t)
    return ts.strftime("%H:%M")


def anonymize_request(request: LLMRequest, prices: PriceMap) -> LLMRequest:
    """The request as the model sees it: times of day only, prices through ``prices``, no context extras
    (free-form values could carry a date or a level)."""
    def p(x: float) -> float:
        return round(prices.to_prompt(x), 4)

    candles = tuple(Candle(clock(c.time) or "", p(c.open), p(c.high), p(c.low), p(c.close))
                    for c in request.candles)
    return LLMRequest(direction=request.direction, barrier=prices.to_prompt(request.barrier),
                      price=prices.to_prompt(request.price), candles=candles, time=clock(request.time),
                      context={})


def barrier_to_real(shown: float, prices: PriceMap) -> float:
    """The real barrier of a barrier the model gave on the shown scale (``invalid_value`` if not positive)."""
    real = prices.to_real(shown)
    if not (math.isfinite(real) and real > 0):
        raise ContractError("invalid_value", f"field 'barrier': {shown!r} lies below the lowest possible "
                                             f"index level")
    return real
