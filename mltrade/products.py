"""Knock-out certificates: typed definitions, validation and vectorised pricing.

One pricing module for everything in mltrade: the backtrader ``KnockoutBroker``,
the gymnasium environments, the vectorised sweep evaluator and the live side
all call the functions below, so a certificate is priced the same way
everywhere.

Conventions (all documented in the README):

* ``direction`` is ``+1`` for a long certificate (call / bull) and ``-1`` for a
  short one (put / bear).
* Fair value in account currency: ``max(direction * (S - K), 0) * ratio * fx``
  where ``fx`` converts one unit of index currency into account currency.
* The issuer quotes ``ask = fair`` and ``bid = max(fair - spread, 0)``: the
  spread is taken off the sell price, as in the original system.
* A turbo has ``barrier == strike``. A mini future's strike is its financing
  level, which moves every calendar day by ``(rate + direction*spread)/360``;
  its barrier sits ``barrier_buffer`` away from the strike and is re-set after
  each adjustment. After a knock-out a mini future pays a residual value from
  the issuer's unwind price, floored at 0; a turbo pays 0.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from datetime import time
from typing import Optional, Tuple, Union

import numpy as np

LONG = 1
SHORT = -1
KINDS = ("turbo", "minifuture")
UNWIND_MODES = ("worst", "barrier", "close")

ArrayLike = Union[float, np.ndarray]

_ids = itertools.count(1)


def _check_direction(direction: int) -> int:
    if direction not in (LONG, SHORT):
        raise ValueError(f"direction: expected +1 (long) or -1 (short), got {direction!r}")
    return int(direction)


# --------------------------------------------------------------------------
# Vectorised pricing (numpy, broadcasting over any shapes)
# --------------------------------------------------------------------------
def intrinsic(direction: ArrayLike, underlying: ArrayLike, strike: ArrayLike,
              ratio: ArrayLike) -> np.ndarray:
    """Value in index currency: ``max(direction*(S-K), 0) * ratio``."""
    d = np.asarray(direction, dtype=float)
    return np.maximum(d * (np.asarray(underlying, float) - np.asarray(strike, float)), 0.0) * ratio


def fair_value(direction: ArrayLike, underlying: ArrayLike, strike: ArrayLike,
               ratio: ArrayLike, fx: ArrayLike = 1.0) -> np.ndarray:
    """Fair value in account currency (intrinsic times the FX rate)."""
    return intrinsic(direction, underlying, strike, ratio) * fx


def ask_price(direction: ArrayLike, underlying: ArrayLike, strike: ArrayLike,
              ratio: ArrayLike, fx: ArrayLike = 1.0, spread: ArrayLike = 0.0) -> np.ndarray:
    """Issuer's ask (what a buyer pays): the fair value."""
    return fair_value(direction, underlying, strike, ratio, fx)


def bid_price(direction: ArrayLike, underlying: ArrayLike, strike: ArrayLike,
              ratio: ArrayLike, fx: ArrayLike = 1.0, spread: ArrayLike = 0.0) -> np.ndarray:
    """Issuer's bid (what a seller gets): fair value less the spread, floored at 0."""
    return np.maximum(fair_value(direction, underlying, strike, ratio, fx) - spread, 0.0)


def underlying_for_bid(direction: ArrayLike, bid: ArrayLike, strike: ArrayLike,
                       ratio: ArrayLike, fx: ArrayLike = 1.0, spread: ArrayLike = 0.0) -> np.ndarray:
    """Index level at which the certificate's bid equals ``bid`` (inverse of :func:`bid_price`)."""
    d = np.asarray(direction, dtype=float)
    return np.asarray(strike, float) + d * (np.asarray(bid, float) + spread) / (ratio * fx)


def underlying_for_ask(direction: ArrayLike, ask: ArrayLike, strike: ArrayLike,
                       ratio: ArrayLike, fx: ArrayLike = 1.0, spread: ArrayLike = 0.0) -> np.ndarray:
    """Index level at which the certificate's ask equals ``ask`` (inverse of :func:`ask_price`)."""
    d = np.asarray(direction, dtype=float)
    return np.asarray(strike, float) + d * np.asarray(ask, float) / (ratio * fx)


def is_knocked_out(direction: ArrayLike, low: ArrayLike, high: ArrayLike,
                   barrier: ArrayLike) -> np.ndarray:
    """True where the bar touched the barrier: long ``low <= B``, short ``high >= B``."""
    d = np.asarray(direction)
    return np.where(d > 0, np.asarray(low) <= barrier, np.asarray(high) >= barrier)


def financed_strike(strike: ArrayLike, direction: ArrayLike, rate: ArrayLike,
                    spread: ArrayLike, days: ArrayLike) -> np.ndarray:
    """Financing level after ``days`` calendar days: ``K*(1 + (rate + d*spread)/360*days)``.

    Adjusted once per calendar day (weekends and holidays count), compounding
    day by day as issuers do.
    """
    d = np.asarray(direction, dtype=float)
    daily = (np.asarray(rate, float) + d * spread) / 360.0
    return np.asarray(strike, float) * (1.0 + daily) ** np.asarray(days, float)


def minifuture_barrier(strike: ArrayLike, direction: ArrayLike, buffer: ArrayLike) -> np.ndarray:
    """Stop-loss barrier of a mini future: ``K*(1 + d*buffer)`` (above K for longs)."""
    return np.asarray(strike, float) * (1.0 + np.asarray(direction, float) * buffer)


def round_barrier_safe(barrier: ArrayLike, direction: ArrayLike, step: float) -> np.ndarray:
    """Snap a wanted barrier to the issuer's grid on the safe side (further from the index).

    Long barriers are floored to a multiple of ``step``, short ones ceiled.
    ``step <= 0`` returns the barrier unchanged.
    """
    b = np.asarray(barrier, float)
    if step is None or step <= 0:
        return b
    d = np.asarray(direction)
    q = b / step
    # tolerate float noise when the barrier already lies on the grid
    q = np.where(np.abs(q - np.round(q)) < 1e-9, np.round(q), q)
    return np.where(d > 0, np.floor(q), np.ceil(q)) * step


def barrier_from_distance(price: ArrayLike, direction: ArrayLike, distance: ArrayLike) -> np.ndarray:
    """Barrier ``distance`` (fraction) away from ``price``: long below, short above."""
    return np.asarray(price, float) * (1.0 - np.asarray(direction, float) * distance)


def unwind_price(direction: ArrayLike, barrier: ArrayLike, bar_open: ArrayLike,
                 bar_low: ArrayLike, bar_high: ArrayLike, bar_close: ArrayLike,
                 mode: str = "worst", gapped: ArrayLike = False) -> np.ndarray:
    """Index level at which the issuer unwinds its hedge after a knock-out.

    ``worst``: the worst price of the bar after the touch (long: low, short:
    high); ``barrier``: the barrier itself (or the open when the bar gapped
    through it); ``close``: the bar's close capped at the barrier.
    """
    d = np.asarray(direction, float)
    if mode == "worst":
        return np.where(d > 0, bar_low, bar_high).astype(float)
    if mode == "barrier":
        return np.where(gapped, bar_open, barrier).astype(float)
    if mode == "close":
        return np.where(d > 0, np.minimum(bar_close, barrier), np.maximum(bar_close, barrier)).astype(float)
    raise ValueError(f"unwind: expected one of {UNWIND_MODES}, got {mode!r}")


def residual_value(direction: ArrayLike, unwind: ArrayLike, strike: ArrayLike,
                   ratio: ArrayLike, fx: ArrayLike = 1.0) -> np.ndarray:
    """What the holder receives after a knock-out: ``max(d*(unwind-K),0)*ratio*fx``."""
    return fair_value(direction, unwind, strike, ratio, fx)


# --------------------------------------------------------------------------
# Typed product definitions
# --------------------------------------------------------------------------
@dataclass
class KnockoutProduct:
    """A knock-out certificate on an index.

    ``strike`` and ``barrier`` are mutable: a mini future's financing level
    moves daily (see :meth:`apply_financing`). Everything else is fixed.
    """

    direction: int
    strike: float
    ratio: float = 0.01
    kind: str = "turbo"
    barrier: Optional[float] = None
    spread: float = 0.0
    fx: float = 1.0
    currency: str = "USD"
    underlying_currency: str = "USD"
    financing_rate: float = 0.0
    financing_spread: float = 0.0
    barrier_buffer: float = 0.0
    barrier_step: float = 0.0
    unwind: str = "worst"
    trading_hours: Optional[Tuple[time, time]] = None
    name: str = ""
    id: int = field(default_factory=lambda: next(_ids))

    def __post_init__(self) -> None:
        self.direction = _check_direction(self.direction)
        if self.kind not in KINDS:
            raise ValueError(f"kind: expected one of {KINDS}, got {self.kind!r}")
        _positive("ratio", self.ratio)
        _positive("fx", self.fx)
        _finite_nonneg("strike", self.strike)
        _finite_nonneg("spread", self.spread)
        _finite_nonneg("barrier_buffer", self.barrier_buffer)
        _finite_nonneg("barrier_step", self.barrier_step)
        _finite_nonneg("financing_spread", self.financing_spread)
        if not math.isfinite(self.financing_rate):
            raise ValueError(f"financing_rate: expected a finite number, got {self.financing_rate!r}")
        if self.unwind not in UNWIND_MODES:
            raise ValueError(f"unwind: expected one of {UNWIND_MODES}, got {self.unwind!r}")
        if self.kind == "turbo":
            if self.barrier is None:
                self.barrier = float(self.strike)
            elif not math.isclose(self.barrier, self.strike, rel_tol=0, abs_tol=1e-12):
                raise ValueError(f"barrier: a turbo's barrier must equal its strike {self.strike}, "
                                 f"got {self.barrier!r}")
        else:
            if self.barrier is None:
                self.barrier = float(minifuture_barrier(self.strike, self.direction, self.barrier_buffer))
            _finite_nonneg("barrier", self.barrier)
            if self.direction * (self.barrier - self.strike) < 0:
                side = "at or above" if self.direction > 0 else "at or below"
                raise ValueError(f"barrier: a {'long' if self.direction > 0 else 'short'} mini future's "
                                 f"barrier must lie {side} its strike {self.strike}, got {self.barrier!r}")
        self.strike = float(self.strike)
        self.barrier = float(self.barrier)
        if not self.name:
            side = "Long" if self.direction > 0 else "Short"
            self.name = f"{side} {self.kind} K={self.strike:.2f} B={self.barrier:.2f}"

    # -- factories ---------------------------------------------------------
    @classmethod
    def turbo(cls, direction: int, barrier: float, **kw) -> "KnockoutProduct":
        """Classic turbo with ``barrier == strike``."""
        return cls(direction=direction, strike=barrier, barrier=barrier, kind="turbo", **kw)

    @classmethod
    def minifuture(cls, direction: int, strike: float, barrier_buffer: float, **kw) -> "KnockoutProduct":
        """Open-end mini future with financing level ``strike`` and barrier buffer."""
        return cls(direction=direction, strike=strike, kind="minifuture",
                   barrier_buffer=barrier_buffer, **kw)

    @classmethod
    def for_index(cls, direction: int, index_price: float, *, barrier: Optional[float] = None,
                  distance: Optional[float] = None, kind: str = "turbo",
                  barrier_buffer: float = 0.0, barrier_step: float = 0.0, **kw) -> "KnockoutProduct":
        """Product whose barrier sits ``distance`` (fraction) from ``index_price``, or at ``barrier``.

        The barrier is snapped to the issuer grid on the safe side and must lie
        on the correct side of the index (long: below, short: above).
        """
        direction = _check_direction(direction)
        _positive("index_price", index_price)
        if barrier is None:
            if distance is None:
                raise ValueError("barrier/distance: give one of them")
            if not (0 <= distance < 1):
                raise ValueError(f"distance: expected a fraction in [0, 1), got {distance!r}")
            barrier = float(barrier_from_distance(index_price, direction, distance))
        barrier = float(round_barrier_safe(barrier, direction, barrier_step))
        check_barrier_side(direction, barrier, index_price)
        if kind == "turbo":
            return cls.turbo(direction, barrier, barrier_step=barrier_step, **kw)
        strike = barrier / (1.0 + direction * barrier_buffer)
        return cls(direction=direction, strike=strike, barrier=barrier, kind=kind,
                   barrier_buffer=barrier_buffer, barrier_step=barrier_step, **kw)

    @classmethod
    def tracker(cls, **kw) -> "KnockoutProduct":
        """The index one-to-one: long, strike 0, ratio 1, no spread (BackBroker's figures exactly).

        Never knocked out; the only product a :class:`~mltrade.brokers.KnockoutBroker` lets a
        strategy sell short (like a stock on BackBroker).
        """
        kw.setdefault("name", "Index tracker")
        return cls(direction=LONG, strike=0.0, ratio=1.0, **kw)

    @property
    def is_tracker(self) -> bool:
        """Whether this is a long strike-0 certificate (it follows the index and can be sold short)."""
        return self.direction > 0 and self.strike == 0.0 and self.kind == "turbo"

    # -- pricing -----------------------------------------------------------
    def fair(self, underlying: ArrayLike, fx: Optional[ArrayLike] = None) -> np.ndarray:
        return fair_value(self.direction, underlying, self.strike, self.ratio, self.fx if fx is None else fx)

    def ask(self, underlying: ArrayLike, fx: Optional[ArrayLike] = None) -> np.ndarray:
        return ask_price(self.direction, underlying, self.strike, self.ratio,
                         self.fx if fx is None else fx, self.spread)

    def bid(self, underlying: ArrayLike, fx: Optional[ArrayLike] = None) -> np.ndarray:
        return bid_price(self.direction, underlying, self.strike, self.ratio,
                         self.fx if fx is None else fx, self.spread)

    # scalar twins of the vectorised functions, for the broker's per-bar hot path
    def fair_scalar(self, underlying: float, fx: float) -> float:
        """``fair_value`` for one float (same formula, no numpy overhead)."""
        v = self.direction * (underlying - self.strike)
        return v * self.ratio * fx if v > 0.0 else 0.0

    def bid_scalar(self, underlying: float, fx: float) -> float:
        """``bid_price`` for one float."""
        v = self.fair_scalar(underlying, fx) - self.spread
        return v if v > 0.0 else 0.0

    def underlying_for_bid_scalar(self, bid: float, fx: float) -> float:
        """``underlying_for_bid`` for one float."""
        return self.strike + self.direction * (bid + self.spread) / (self.ratio * fx)

    def leverage(self, underlying: float, fx: Optional[float] = None) -> float:
        """Index exposure per unit of certificate price: ``S*ratio*fx / ask``."""
        fx = self.fx if fx is None else fx
        a = float(self.ask(underlying, fx))
        return float("inf") if a <= 0 else underlying * self.ratio * fx / a

    def knocked_out_by(self, low: ArrayLike, high: ArrayLike) -> np.ndarray:
        return is_knocked_out(self.direction, low, high, self.barrier)

    def residual(self, unwind: ArrayLike, fx: Optional[ArrayLike] = None) -> np.ndarray:
        if self.kind == "turbo":
            return np.zeros_like(np.asarray(unwind, float))
        return residual_value(self.direction, unwind, self.strike, self.ratio, self.fx if fx is None else fx)

    def apply_financing(self, days: int) -> float:
        """Move a mini future's financing level by ``days`` calendar days; re-set the barrier.

        Returns the change of the strike (index points). Turbos are unchanged.
        """
        if self.kind != "minifuture" or days <= 0:
            return 0.0
        old = self.strike
        self.strike = float(financed_strike(old, self.direction, self.financing_rate,
                                            self.financing_spread, days))
        barrier = minifuture_barrier(self.strike, self.direction, self.barrier_buffer)
        self.barrier = float(round_barrier_safe(barrier, self.direction, self.barrier_step))
        if self.direction * (self.barrier - self.strike) < 0:  # rounding must stay on the safe side
            self.barrier = float(barrier)
        return self.strike - old

    def copy(self, **changes) -> "KnockoutProduct":
        """A new product (new id) with ``changes`` applied."""
        changes.setdefault("id", next(_ids))
        return dataclasses.replace(self, **changes)

    def in_trading_hours(self, t: time) -> bool:
        """Whether the issuer quotes at local time ``t`` (always, if no hours set)."""
        if self.trading_hours is None:
            return True
        start, end = self.trading_hours
        return start <= t < end if start <= end else (t >= start or t < end)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if self.trading_hours is not None:
            d["trading_hours"] = [t.isoformat() for t in self.trading_hours]
        return d


@dataclass
class CertificateSpec:
    """How to pick a certificate when a strategy's order names none (``KnockoutBroker(product=spec)``).

    A long position is held in a long certificate and a short one in a short certificate, each
    chosen when the order that opens it is placed: its barrier lies ``distance`` from the index
    close of that moment (snapped to ``barrier_step``); the other fields are the product's.
    """

    distance: float = 0.04
    kind: str = "turbo"
    ratio: float = 0.01
    spread: float = 0.0
    fx: float = 1.0
    barrier_step: float = 0.0
    barrier_buffer: float = 0.0
    financing_rate: float = 0.0
    financing_spread: float = 0.0
    unwind: str = "worst"

    def __post_init__(self) -> None:
        if not (isinstance(self.distance, (int, float)) and 0 < self.distance < 1):
            raise ValueError(f"distance: expected a fraction in (0, 1), got {self.distance!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind: expected one of {KINDS}, got {self.kind!r}")
        if self.unwind not in UNWIND_MODES:
            raise ValueError(f"unwind: expected one of {UNWIND_MODES}, got {self.unwind!r}")
        _positive("ratio", self.ratio)
        _positive("fx", self.fx)
        for name in ("spread", "barrier_step", "barrier_buffer", "financing_spread"):
            _finite_nonneg(name, getattr(self, name))

    @classmethod
    def from_config(cls, product: dict, where: str = "product") -> "CertificateSpec":
        """A spec from a ``[product]`` table (unknown keys are named in the error)."""
        names = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(product) - names)
        if extra:
            raise ValueError(f"{where}: unknown key(s) {', '.join(extra)}; valid: {', '.join(sorted(names))}")
        try:
            return cls(**product)
        except ValueError as exc:
            raise ValueError(f"{where}.{exc}") from None

    def product_for(self, direction: int, index_price: float) -> "KnockoutProduct":
        """The certificate of ``direction`` a position opened at ``index_price`` is held in."""
        return KnockoutProduct.for_index(
            direction, index_price, distance=self.distance, kind=self.kind, ratio=self.ratio,
            spread=self.spread, fx=self.fx, barrier_step=self.barrier_step,
            barrier_buffer=self.barrier_buffer, financing_rate=self.financing_rate,
            financing_spread=self.financing_spread, unwind=self.unwind)


def check_barrier_side(direction: int, barrier: float, index_price: float) -> None:
    """Raise ``ValueError`` unless the barrier lies on the correct side of the index."""
    if direction > 0 and not barrier < index_price:
        raise ValueError(f"barrier: a long certificate's barrier must lie below the index "
                         f"{index_price:.2f}, got {barrier!r}")
    if direction < 0 and not barrier > index_price:
        raise ValueError(f"barrier: a short certificate's barrier must lie above the index "
                         f"{index_price:.2f}, got {barrier!r}")


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float, np.floating, np.integer)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: expected a positive number, got {value!r}")


def _finite_nonneg(name: str, value: float) -> None:
    if not (isinstance(value, (int, float, np.floating, np.integer)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}: expected a non-negative number, got {value!r}")
