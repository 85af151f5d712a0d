"""The decision contract between a strategy and a language model.

A typed :class:`LLMRequest` is built from a :class:`~mltrade.strategies.decision.Decision`
and its :class:`~mltrade.strategies.decision.DecisionContext`; the model's text is
parsed into an :class:`LLMResponse` (the original's shape
``{"action": "BUY"|"SELL", "position": ["Long"|"Short", barrier, "reasoning"]}``
or a flat ``{"action", "direction", "barrier", "reasoning"}`` object, bare,
wrapped in prose or in code fences) and checked by :func:`validate` against
rules enforced in code, not only in the prompt:

* the barrier lies on the correct side of the price (long below, short above);
* a barrier moved closer than the ML one (more leverage) is refused or clamped;
* a reversed direction keeps at least the ML barrier's distance from the price;
* leverage ``price / |price - barrier|`` stays under a cap.

Every outcome carries one of :data:`OUTCOMES` and a reason code from :data:`REASONS`.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional

import pandas as pd

from mltrade.strategies.decision import Decision, DecisionContext

OUTCOMES = ("confirmed", "adjusted", "reversed", "skipped", "fallback")

#: reason code -> meaning (every record of the overlay carries one of these)
REASONS = {
    "same_barrier": "the model confirmed the ML direction and barrier",
    "barrier_further": "the model kept the direction and moved the barrier further away (less leverage)",
    "closer_clamped": "the model moved the barrier closer (more leverage); clamped to the ML barrier",
    "leverage_clamped": "the model's barrier exceeded the leverage cap; moved out to the cap",
    "reversed_ok": "the model reversed the direction and kept at least the ML barrier's distance",
    "reversal_clamped": "the model reversed the direction too close to the price; clamped to the ML distance",
    "model_skip": "the model declined to trade",
    "wrong_side": "the model's barrier is on the wrong side of the price",
    "closer_barrier": "the model moved the barrier closer than the ML one (more leverage); refused",
    "reversal_too_close": "the model reversed with a barrier closer than the ML distance; refused",
    "leverage_cap": "the model's barrier exceeds the leverage cap; refused",
    "invalid_json": "the model's answer is not valid JSON even after one repair call",
    "missing_field": "the model's answer lacks a required field (after one repair call)",
    "invalid_value": "a field of the model's answer has an invalid value (after one repair call)",
    "timeout": "the API call timed out",
    "rate_limited": "the API kept answering 429 (rate limit) after the retries",
    "http_error": "the API answered an HTTP error",
    "connection_error": "the API could not be reached",
    "refusal": "the model refused to answer",
    "empty_answer": "the model's answer was empty",
    "malformed_answer": "the API answered HTTP 200 with a body that is not a usable chat completion",
}

_ACTIONS_TRADE = ("BUY", "SELL")
_ACTIONS_SKIP = ("SKIP", "HOLD", "NONE", "NO_TRADE", "NOTRADE", "PASS")
_DIRECTIONS = {"long": 1, "short": -1, "call": 1, "put": -1, "bull": 1, "bear": -1,
               "buy": 1, "sell": -1, "1": 1, "+1": 1, "-1": -1}


class ContractError(ValueError):
    """The model's answer breaks the contract; ``code`` is a key of :data:`REASONS`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Candle:
    """One bar as sent to the model (time as ISO text, exchange-local)."""

    time: str
    open: float
    high: float
    low: float
    close: float

    def to_dict(self) -> dict:
        return {"time": self.time, "open": self.open, "high": self.high, "low": self.low,
                "close": self.close}


@dataclass(frozen=True)
class LLMRequest:
    """What the model is asked to review: the ML decision, the price and the last candles."""

    direction: int
    barrier: float
    price: float
    candles: tuple[Candle, ...] = ()
    time: Optional[str] = None
    context: dict = field(default_factory=dict)

    @property
    def distance(self) -> float:
        """Barrier distance from the price as a fraction of the price."""
        return abs(self.price - self.barrier) / self.price

    @property
    def direction_name(self) -> str:
        return "Long" if self.direction > 0 else "Short"

    @classmethod
    def from_decision(cls, decision: Decision, context: Optional[DecisionContext] = None,
                      n_candles: int = 17) -> "LLMRequest":
        """Build a request from a strategy's decision and the last ``n_candles`` candles of its context."""
        if decision.direction not in (1, -1):
            raise ValueError(f"decision.direction: expected +1 or -1 to review, got {decision.direction!r}")
        price = float(decision.price)
        if not (math.isfinite(price) and price > 0):
            raise ValueError(f"decision.price: expected a positive number, got {decision.price!r}")
        barrier = decision.barrier_level()
        if barrier is None:
            raise ValueError("decision: needs a barrier or a distance to be reviewed")
        check_side(decision.direction, barrier, price)
        candles: tuple[Candle, ...] = ()
        extra: dict = {}
        if context is not None:
            candles = candles_from_frame(context.candles, n_candles)
            extra = {k: _jsonable(v) for k, v in (context.extra or {}).items()}
        t = decision.time.isoformat() if isinstance(decision.time, datetime) else (
            None if decision.time is None else str(decision.time))
        return cls(direction=int(decision.direction), barrier=float(barrier), price=price,
                   candles=candles, time=t, context=extra)

    def to_payload(self) -> dict:
        """Plain JSON-able dict (what the prompt shows and what the cache key covers)."""
        return {
            "ml_direction": self.direction_name,
            "ml_barrier": round(self.barrier, 4),
            "current_price": round(self.price, 4),
            "barrier_distance_pct": round(100 * self.distance, 4),
            "decision_time": self.time,
            "candles": [c.to_dict() for c in self.candles],
            "context": self.context,
        }


@dataclass(frozen=True)
class LLMResponse:
    """The model's parsed answer. ``direction`` is 0 when the model declines to trade."""

    action: str
    direction: int
    barrier: Optional[float]
    reasoning: str = ""


@dataclass(frozen=True)
class ContractRules:
    """Rules applied to every answer; ``closer_barrier``/``leverage_mode`` are ``refuse`` or ``clamp``."""

    closer_barrier: str = "refuse"
    max_leverage: Optional[float] = 50.0
    leverage_mode: str = "clamp"
    rel_tol: float = 1e-6

    def __post_init__(self) -> None:
        for name in ("closer_barrier", "leverage_mode"):
            v = getattr(self, name)
            if v not in ("refuse", "clamp"):
                raise ValueError(f"{name}: expected 'refuse' or 'clamp', got {v!r}")
        if self.max_leverage is not None and not (self.max_leverage > 1):
            raise ValueError(f"max_leverage: expected a number > 1 or none, got {self.max_leverage!r}")


@dataclass(frozen=True)
class Verdict:
    """Result of :func:`validate`: ``accepted`` with the final direction/barrier, or a refusal reason."""

    accepted: bool
    outcome: Optional[str]
    reason: str
    direction: int = 0
    barrier: Optional[float] = None


# --------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)


def extract_json(text: Optional[str]) -> dict:
    """Find the JSON object in ``text``: bare, inside code fences, or wrapped in prose."""
    if text is None or not str(text).strip():
        raise ContractError("empty_answer", "the answer is empty")
    text = str(text).strip()
    candidates = [text] + [m.group(1).strip() for m in _FENCE.finditer(text)]
    for cand in candidates:
        try:
            obj = json.loads(cand)
        except (ValueError, TypeError):
            continue
        if isinstance(obj, dict):
            return obj
    dec = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch != "{":
            continue
        try:
            obj, _ = dec.raw_decode(text, i)
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj
    snippet = text[:80].replace("\n", " ")
    raise ContractError("invalid_json", f"no complete JSON object found in the answer (starts {snippet!r})")


def parse_response(obj: dict) -> LLMResponse:
    """Validate a decoded answer: the original's ``position`` list or a flat object; extra keys ignored."""
    if not isinstance(obj, dict):
        raise ContractError("invalid_value", f"expected a JSON object, got {type(obj).__name__}")
    low = {str(k).lower(): v for k, v in obj.items()}
    if "action" not in low:
        raise ContractError("missing_field", "field 'action' is missing (expected BUY, SELL or SKIP)")
    action = str(low["action"]).strip().upper().replace(" ", "_")
    if action in _ACTIONS_SKIP:
        return LLMResponse(action="SKIP", direction=0, barrier=None, reasoning=_reasoning(low))
    if action not in _ACTIONS_TRADE:
        raise ContractError("invalid_value",
                            f"field 'action': expected BUY, SELL or SKIP, got {low['action']!r}")
    if "position" in low:
        pos = low["position"]
        if isinstance(pos, dict):
            return _flat(action, {str(k).lower(): v for k, v in pos.items()}, where="position.")
        if not isinstance(pos, (list, tuple)):
            raise ContractError("invalid_value", "field 'position': expected [direction, barrier, reasoning]")
        if len(pos) < 2:
            raise ContractError("missing_field", "field 'position': expected [direction, barrier, "
                                                 f"reasoning], got {len(pos)} item(s)")
        direction = _direction(pos[0], "position[0]")
        barrier = _barrier(pos[1], "position[1]")
        reasoning = str(pos[2]) if len(pos) > 2 else _reasoning(low)
        return LLMResponse(action=action, direction=direction, barrier=barrier, reasoning=reasoning)
    return _flat(action, low)


def _flat(action: str, low: dict, where: str = "") -> LLMResponse:
    for key in ("direction", "barrier"):
        if key not in low:
            raise ContractError("missing_field", f"field '{where}{key}' is missing")
    return LLMResponse(action=action, direction=_direction(low["direction"], where + "direction"),
                       barrier=_barrier(low["barrier"], where + "barrier"), reasoning=_reasoning(low))


def _reasoning(low: dict) -> str:
    v = low.get("reasoning", low.get("reason", ""))
    return "" if v is None else str(v)


def _direction(v: Any, name: str) -> int:
    if isinstance(v, bool):
        raise ContractError("invalid_value", f"field '{name}': expected Long or Short, got {v!r}")
    if isinstance(v, (int, float)) and v in (1, -1):
        return int(v)
    d = _DIRECTIONS.get(str(v).strip().lower())
    if d is None:
        raise ContractError("invalid_value", f"field '{name}': expected Long or Short, got {v!r}")
    return d


def _barrier(v: Any, name: str) -> float:
    if isinstance(v, bool):
        raise ContractError("invalid_value", f"field '{name}': expected a number, got {v!r}")
    try:
        b = float(str(v).replace(",", "")) if isinstance(v, str) else float(v)
    except (TypeError, ValueError):
        raise ContractError("invalid_value", f"field '{name}': expected a number, got {v!r}") from None
    if not (math.isfinite(b) and b > 0):
        raise ContractError("invalid_value", f"field '{name}': expected a positive number, got {v!r}")
    return b


def parse_text(text: Optional[str]) -> LLMResponse:
    """:func:`extract_json` then :func:`parse_response`."""
    return parse_response(extract_json(text))


# --------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------
def check_side(direction: int, barrier: float, price: float) -> None:
    """Raise :class:`ContractError` ``wrong_side`` unless long barrier < price < short barrier."""
    if direction > 0 and not barrier < price:
        raise ContractError("wrong_side",
                            f"a Long barrier must lie below the price {price:.2f}, got {barrier:.2f}")
    if direction < 0 and not barrier > price:
        raise ContractError("wrong_side",
                            f"a Short barrier must lie above the price {price:.2f}, got {barrier:.2f}")


def leverage(price: float, barrier: float) -> float:
    """Leverage of a turbo with this barrier: ``price / |price - barrier|``."""
    gap = abs(price - barrier)
    return math.inf if gap == 0 else price / gap


def validate(request: LLMRequest, response: LLMResponse, rules: ContractRules = ContractRules()) -> Verdict:
    """Apply the rules to an answer: accepted (with outcome, maybe clamped) or refused (with reason)."""
    if response.direction == 0:
        return Verdict(True, "skipped", "model_skip", 0, None)
    d, b, p = response.direction, float(response.barrier), request.price
    try:
        check_side(d, b, p)
    except ContractError as e:
        return Verdict(False, None, e.code)
    ml_gap = abs(p - request.barrier)
    gap = abs(p - b)
    tol = rules.rel_tol * p
    reasons = []
    if d == request.direction:
        if gap < ml_gap - tol:
            if rules.closer_barrier == "refuse":
                return Verdict(False, None, "closer_barrier")
            b, gap = request.barrier, ml_gap
            reasons.append("closer_clamped")
    else:
        if gap < ml_gap - tol:
            if rules.closer_barrier == "refuse":
                return Verdict(False, None, "reversal_too_close")
            b, gap = p * (1 - d * request.distance), ml_gap
            reasons.append("reversal_clamped")
    if rules.max_leverage is not None and leverage(p, b) > rules.max_leverage * (1 + 1e-9):
        if rules.leverage_mode == "refuse":
            return Verdict(False, None, "leverage_cap")
        b = p * (1 - d / rules.max_leverage)
        gap = abs(p - b)
        reasons.append("leverage_clamped")
    if d != request.direction:
        return Verdict(True, "reversed", reasons[-1] if reasons else "reversed_ok", d, b)
    if abs(gap - ml_gap) <= tol:
        return Verdict(True, "confirmed", reasons[-1] if reasons else "same_barrier", d, request.barrier)
    return Verdict(True, "adjusted", reasons[-1] if reasons else "barrier_further", d, b)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def candles_from_frame(df: Optional[pd.DataFrame], n: int) -> tuple[Candle, ...]:
    """Last ``n`` rows of an OHLC frame (oldest first) as :class:`Candle` tuples."""
    if df is None or len(df) == 0 or n <= 0:
        return ()
    missing = [c for c in ("open", "high", "low", "close") if c not in df.columns]
    if missing:
        raise ValueError(f"context.candles: missing column(s) {missing}; expected open, high, low, close")
    tail = df.iloc[-n:]
    out = []
    for ts, row in zip(tail.index, tail.itertuples(index=False)):
        t = ts.isoformat() if hasattr(ts, "isoformat") else str(ts)
        out.append(Candle(t, round(float(row.open), 4), round(float(row.high), 4),
                          round(float(row.low), 4), round(float(row.close), 4)))
    return tuple(out)


def _jsonable(v: Any) -> Any:
    try:
        json.dumps(v)
        return v
    except (TypeError, ValueError):
        if hasattr(v, "item"):
            try:
                return v.item()
            except (TypeError, ValueError):
                pass
        return str(v)
