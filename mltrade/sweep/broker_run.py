"""Full backtrader runs through ``KnockoutBroker`` for one parameter set (the evaluator's reference)."""
from __future__ import annotations

from typing import Mapping, Optional, Type

import backtrader as bt
import pandas as pd

from mltrade.brokers.knockout import KnockoutBroker
from mltrade.feeds.bars import IndexData
from mltrade.strategies.base import KnockoutStrategy

#: evaluator parameter names that belong to the broker, not to the strategy
BROKER_PARAMS = ("cash", "commission_fixed", "commission_pct")


def strategy_kwargs(cls: Type[KnockoutStrategy], params: Mapping) -> dict:
    """The entries of ``params`` that ``cls`` declares (others, e.g. broker settings, are dropped)."""
    names = set(cls.params._getkeys())
    out = {}
    for k, v in params.items():
        if k in names:
            if k in ("stake", "stake_fraction") and v is not None and v != v:  # NaN = not set
                v = None
            if k == "decision_bar":
                v = int(v)
            out[k] = v
    return out


def run_broker(bars: pd.DataFrame, strategy: Type[KnockoutStrategy], params: Mapping,
               exchange: str = "XNAS", interval: int = 5, extra: Optional[Mapping] = None) -> dict:
    """Run ``strategy`` with ``params`` over ``bars`` on a ``KnockoutBroker``.

    Returns ``{"final_value", "roundtrips" (DataFrame), "knockouts", "strategy"}``.
    """
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(IndexData(dataframe=bars, exchange=exchange, interval=interval))
    broker = KnockoutBroker(cash=float(params.get("cash", 10_000.0)),
                            commission_fixed=float(params.get("commission_fixed", 0.0)),
                            commission_pct=float(params.get("commission_pct", 0.0)))
    cerebro.setbroker(broker)
    kw = strategy_kwargs(strategy, params)
    kw.update(extra or {})
    cerebro.addstrategy(strategy, **kw)
    strat = cerebro.run()[0]
    return {"final_value": float(broker.getvalue()), "roundtrips": pd.DataFrame(broker.roundtrips),
            "knockouts": list(broker.knockouts), "strategy": strat}
