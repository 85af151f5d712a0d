"""Small builders shared by the core tests: hand-made bars and a scripted strategy."""
from __future__ import annotations

from typing import Callable, Dict, List, Sequence, Tuple

import backtrader as bt
import pandas as pd

from mltrade.brokers import KnockoutBroker
from mltrade.feeds.bars import IndexData
from mltrade.strategies.base import KnockoutStrategy

Bar = Tuple[float, float, float, float]


def make_bars(rows: Sequence[Bar], start: str = "2019-01-02 09:30", tz: str = "America/New_York",
              freq: str = "5min", index=None) -> pd.DataFrame:
    """Bars from (open, high, low, close) tuples, 5 minutes apart from ``start`` (exchange-local)."""
    if index is None:
        index = pd.date_range(start, periods=len(rows), freq=freq, tz=tz)
    df = pd.DataFrame(list(rows), columns=["open", "high", "low", "close"], index=index)
    df["volume"] = 1000.0
    return df


class Scripted(KnockoutStrategy):
    """Runs ``script[bar_number]`` (0-based bar count) callables with the strategy as argument."""

    params = (("script", None), ("stop", None), ("flat_at_session_end", False))

    def __init__(self) -> None:
        super().__init__()
        self.events: List[tuple] = []
        self.trades_closed: List[bt.Trade] = []
        self.kos: List[dict] = []
        self.values: List[float] = []

    def next(self) -> None:
        for action in (self.p.script or {}).get(len(self) - 1, []):
            action(self)
        self.values.append(self.broker.getvalue())

    def notify_order(self, order) -> None:
        self.events.append((order.getstatusname(), order.isbuy(), order.executed.size, order.executed.price,
                            dict(order.info)))

    def notify_trade(self, trade) -> None:
        if trade.isclosed:
            self.trades_closed.append(trade)

    def notify_knockout(self, product, event) -> None:
        self.kos.append(event)


def run(bars: pd.DataFrame, script: Dict[int, List[Callable]], cash: float = 10_000.0,
        broker_kw: dict | None = None, strat_kw: dict | None = None, interval=5):
    """Run ``Scripted`` on ``bars`` with a KnockoutBroker; returns (strategy, broker)."""
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(IndexData(dataframe=bars, interval=interval))
    broker = KnockoutBroker(cash=cash, **(broker_kw or {}))
    cerebro.broker = broker
    cerebro.addstrategy(Scripted, script=script, **(strat_kw or {}))
    strat = cerebro.run()[0]
    return strat, broker


def completed(strat: Scripted) -> List[tuple]:
    return [e for e in strat.events if e[0] == "Completed"]


def dqn_tables(daily: pd.DataFrame, registry: str, **params) -> Dict[bool, pd.DataFrame]:
    """The DQN strategy's decision table on daily bars, in batch (False) and live (True) mode."""
    from mltrade.strategies.dqn import DQNEnsembleStrategy

    tables = {}
    for live in (False, True):
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(IndexData(dataframe=daily, exchange="XNAS", interval=None))
        cerebro.broker = KnockoutBroker(cash=10000.0)
        cerebro.addstrategy(DQNEnsembleStrategy, registry=registry, live=live, oos_only=False, **params)
        tables[live] = cerebro.run()[0].table
    return tables


def replay_bar(index: float, day: str = "2018-06-01"):
    """A live replay feed with one loaded sample bar, scaled so the session closes at ``index``."""
    from mltrade.feeds.sample import sample_intraday
    from mltrade.live.scheduler import ReplayData

    bars = sample_intraday(day, day)
    d = ReplayData(dataframe=bars * (index / float(bars["close"].iloc[0])), exchange="XNAS", interval=5)
    d._env = bt.Cerebro()
    d._start()
    d.next()
    return d
