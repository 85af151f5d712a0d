"""The round-trip record: one closed position as the brokers report it (``order.info['roundtrip']``).

Built in one place for the simulated :class:`~mltrade.brokers.knockout.KnockoutBroker` and the live
:class:`~mltrade.live.broker.SeleniumBroker` (which adds its venue references); the analyzers, reports
and the live-vs-simulation comparison read these keys.
"""
from __future__ import annotations

from typing import Any, Dict


def roundtrip_record(pos: Any, *, size: float, entry_time: str, exit_time: str, exit_price: float,
                     exit_underlying: float, reason: str, bars: int, **extra: Any) -> Dict[str, Any]:
    """The record of the closed :class:`~mltrade.brokers.knockout.CertPosition` ``pos``.

    P&L is proceeds less cost less all fees, its return relative to the cost plus the entry fee;
    ``extra`` keys (the live broker's venue and journal references) follow the common ones.
    """
    p = pos.product
    pnl = pos.proceeds - pos.cost - pos.fees
    invested = pos.cost + pos.entry_fees
    return {
        "product": p.name, "kind": p.kind, "direction": "long" if p.direction > 0 else "short",
        "strike": pos.entry_strike, "barrier": pos.entry_barrier, "ratio": p.ratio,
        "size": size,
        "entry_time": entry_time,
        "entry_price": pos.price, "entry_underlying": pos.entry_underlying,
        "exit_time": exit_time,
        "exit_price": exit_price, "exit_underlying": exit_underlying,
        "fees": pos.fees, "financing": pos.financing, "exit_reason": reason,
        "pnl": pnl, "return": pnl / invested if invested else 0.0,
        "leverage": pos.entry_leverage, "bars": bars,
        "invested": invested,
        **extra,
    }
