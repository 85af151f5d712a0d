"""The trade decision a strategy hands to ``KnockoutStrategy.submit_decision``.

A decision is plain data so that overlays (the LLM overlay, risk filters) can
review it without knowing which strategy produced it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Optional, Protocol

import pandas as pd

from mltrade.analyzers.performance import PROVENANCE_COLUMNS  # noqa: F401 (the columns provenance() fills)


@dataclass
class Decision:
    """Direction ``+1`` long, ``-1`` short, ``0`` no trade; barrier absolute or as a distance."""

    direction: int
    price: float                       #: index price at decision time
    time: Optional[datetime] = None    #: decision time (exchange-local, naive)
    barrier: Optional[float] = None    #: absolute barrier level (wins over distance)
    distance: Optional[float] = None   #: barrier distance from ``price`` as a fraction
    stop: Optional[float] = None       #: stop as a fraction of the entry price (e.g. 0.71)
    source: str = "strategy"           #: who made it ("strategy", "llm", ...)
    info: dict = field(default_factory=dict)

    def barrier_level(self) -> Optional[float]:
        """Absolute barrier: ``barrier`` or ``price*(1 - direction*distance)``."""
        if self.barrier is not None:
            return float(self.barrier)
        if self.distance is not None and self.direction:
            return float(self.price * (1.0 - self.direction * self.distance))
        return None

    def replace(self, **changes: Any) -> "Decision":
        return replace(self, **changes)


@dataclass
class DecisionContext:
    """What an overlay may look at: recent candles (oldest first) and free-form extras."""

    candles: pd.DataFrame
    session: Any = None
    extra: dict = field(default_factory=dict)


class DecisionOverlay(Protocol):
    """Anything that can review a decision before it is executed."""

    def review(self, decision: Decision, context: DecisionContext) -> Decision: ...


def provenance(decision: Decision) -> dict:
    """The decision's provenance (see :data:`PROVENANCE_COLUMNS`); ``None`` for what it does not carry."""
    info = decision.info if isinstance(decision.info, dict) else {}
    llm = info.get("llm") if isinstance(info.get("llm"), dict) else {}

    def plain(v: Any) -> Any:
        return v if isinstance(v, (int, float, str, bool)) else None

    return {"decision_source": decision.source, "model_id": plain(info.get("model_id")),
            "agreement": plain(info.get("agreement")), "gate_proba": plain(info.get("gate_proba")),
            "p_long": plain(info.get("p_long")), "llm_action": plain(llm.get("outcome"))}
