"""KnockoutBroker against backtrader's BackBroker: plain backtrader strategies, every order type.

Each case is a small plain ``bt.Strategy`` plan written here. It runs on BackBroker and on
``KnockoutBroker(product=KnockoutProduct.tracker())``; final value, cash, closed trades, every
fill and every notification must agree. The turbo-spec cases are checked by hand.
"""
from __future__ import annotations

import datetime as _dt

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from mltrade.brokers import KnockoutBroker
from mltrade.feeds.bars import IndexData
from mltrade.products import CertificateSpec, KnockoutProduct
from tests.helpers import make_bars


def _walk(n: int = 240, seed: int = 7) -> pd.DataFrame:
    """Five-minute bars of a random walk over several sessions (gaps between sessions)."""
    rng = np.random.default_rng(seed)
    days = pd.bdate_range("2019-01-02", periods=n // 78 + 1)
    idx = pd.DatetimeIndex([d + pd.Timedelta(hours=9, minutes=30) + pd.Timedelta(minutes=5 * i)
                            for d in days for i in range(78)][:n]).tz_localize("America/New_York")
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
    open_ = np.r_[100.0, close[:-1]] * np.exp(rng.normal(0, 0.001, n))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.002, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.002, n)))
    return make_bars(list(zip(open_, high, low, close)), index=idx)


BARS = _walk()


class Plan(bt.Strategy):
    """Calls ``plan(self, bar_number)`` every bar; records fills, statuses and closed trades."""

    params = (("plan", None), ("open_plan", None))

    def __init__(self):
        self.fills, self.statuses, self.trades, self.values = [], [], [], []
        self.mem: dict = {}

    def next_open(self):
        if self.p.open_plan is not None:
            self.p.open_plan(self, len(self) - 1)

    def next(self):
        self.p.plan(self, len(self) - 1)
        self.values.append(self.broker.getvalue())

    def notify_order(self, order):
        self.statuses.append((order.ref - self.mem.setdefault("ref0", order.ref), order.getstatusname()))
        if order.status in (order.Completed, order.Partial):
            self.fills.append((order.isbuy(), round(order.executed.size, 9), round(order.executed.price, 9),
                               bt.num2date(order.executed.dt).isoformat()))

    def notify_trade(self, trade):
        if trade.isclosed:
            self.trades.append(round(trade.pnl, 9))


def run(plan, broker=None, cash=10_000.0, bars=BARS, open_plan=None, cheat_on_open=False, setup=None):
    cerebro = bt.Cerebro(stdstats=False, cheat_on_open=cheat_on_open)
    cerebro.adddata(IndexData(dataframe=bars))
    if broker is not None:
        cerebro.broker = broker
    cerebro.broker.setcash(cash)
    if setup is not None:
        setup(cerebro.broker)
    cerebro.addstrategy(Plan, plan=plan, open_plan=open_plan)
    strat = cerebro.run()[0]
    return strat, cerebro.broker


def at(plan_map):
    """A plan from {bar number: action(strategy)}."""
    def plan(s, n):
        for action in plan_map.get(n, []) if isinstance(plan_map.get(n), list) else [plan_map.get(n)]:
            if action is not None:
                action(s)
    return plan


def px(s, k=1.0):
    return float(s.data.close[0]) * k


CASES = {
    "market_round_trips": at({5: lambda s: s.buy(size=10), 30: lambda s: s.sell(size=10),
                              60: lambda s: s.buy(size=5), 61: lambda s: s.buy(size=5),
                              90: lambda s: s.close()}),
    "close_exectype": at({10: lambda s: s.buy(size=10, exectype=bt.Order.Close),
                          40: lambda s: s.sell(size=10, exectype=bt.Order.Close)}),
    "limit": at({5: lambda s: s.buy(size=10, exectype=bt.Order.Limit, price=px(s, 0.995)),
                 100: lambda s: s.sell(size=10, exectype=bt.Order.Limit, price=px(s, 1.004))}),
    "stop": at({5: lambda s: s.buy(size=10, exectype=bt.Order.Stop, price=px(s, 1.003)),
                100: lambda s: s.sell(size=10, exectype=bt.Order.Stop, price=px(s, 0.996))}),
    "stoplimit": at({5: lambda s: s.buy(size=10, exectype=bt.Order.StopLimit, price=px(s, 1.002),
                                        plimit=px(s, 1.004)),
                     100: lambda s: s.sell(size=10, exectype=bt.Order.StopLimit, price=px(s, 0.997),
                                           plimit=px(s, 0.995))}),
    "stoptrail_amount": at({5: lambda s: s.buy(size=10),
                            6: lambda s: s.sell(size=10, exectype=bt.Order.StopTrail, trailamount=0.6)}),
    "stoptrail_percent": at({5: lambda s: s.sell(size=10),
                             6: lambda s: s.buy(size=10, exectype=bt.Order.StopTrail, trailpercent=0.006)}),
    "stoptraillimit": at({5: lambda s: s.buy(size=10),
                          6: lambda s: s.sell(size=10, exectype=bt.Order.StopTrailLimit, price=px(s),
                                              plimit=px(s, 0.999), trailamount=0.5)}),
    "buy_bracket": at({5: lambda s: s.buy_bracket(size=10, price=px(s, 0.999), stopprice=px(s, 0.99),
                                                  limitprice=px(s, 1.01)),
                       150: lambda s: s.buy_bracket(size=10, exectype=bt.Order.Market, stopprice=px(s, 0.995),
                                                    limitprice=px(s, 1.003))}),
    "sell_bracket": at({5: lambda s: s.sell_bracket(size=10, price=px(s, 1.001), stopprice=px(s, 1.01),
                                                    limitprice=px(s, 0.99))}),
    "parent_transmit": at({5: lambda s: s.mem.update(p=s.buy(size=10, transmit=False)),
                           6: lambda s: s.sell(size=10, exectype=bt.Order.Stop, price=px(s, 0.995),
                                               parent=s.mem["p"], transmit=True)}),
    "oco": at({5: lambda s: s.mem.update(a=s.buy(size=10, exectype=bt.Order.Limit, price=px(s, 0.997))),
               6: lambda s: s.buy(size=10, exectype=bt.Order.Stop, price=px(s, 1.003), oco=s.mem["a"])}),
    "valid_expiry": at({5: lambda s: s.buy(size=10, exectype=bt.Order.Limit, price=px(s, 0.9),
                                           valid=_dt.timedelta(minutes=30)),
                        80: lambda s: s.buy(size=10, exectype=bt.Order.Limit, price=px(s, 0.9),
                                            valid=bt.Order.DAY), 200: lambda s: s.buy(size=1)}),
    "cancel": at({5: lambda s: s.mem.update(o=s.buy(size=10, exectype=bt.Order.Limit, price=px(s, 0.9))),
                  8: lambda s: s.cancel(s.mem["o"]), 20: lambda s: s.buy(size=1)}),
    "short_from_flat": at({5: lambda s: s.sell(size=10), 50: lambda s: s.buy(size=10),
                           60: lambda s: s.sell(size=4), 90: lambda s: s.close()}),
    "reversal_sell3_holding1": at({5: lambda s: s.buy(size=1), 20: lambda s: s.sell(size=3),
                                   60: lambda s: s.buy(size=4), 100: lambda s: s.close()}),
    "order_target": at({5: lambda s: s.order_target_size(target=7), 20: lambda s: s.order_target_size(target=-3),
                        40: lambda s: s.order_target_value(target=2000.0),
                        60: lambda s: s.order_target_percent(target=0.3),
                        80: lambda s: s.order_target_percent(target=-0.2), 120: lambda s: s.close()}),
    "margin_insufficient_cash": at({5: lambda s: s.buy(size=1000), 10: lambda s: s.buy(size=60),
                                    11: lambda s: s.buy(size=60)}),
}


def _outcome(strat, broker):
    return {"value": round(broker.getvalue(), 6), "cash": round(broker.getcash(), 6),
            "trades": strat.trades, "fills": strat.fills, "statuses": strat.statuses}


@pytest.mark.parametrize("case", sorted(CASES))
def test_tracker_equals_backbroker(case):
    plan = CASES[case]
    ref = _outcome(*run(plan))
    got = _outcome(*run(plan, KnockoutBroker(product=KnockoutProduct.tracker())))
    assert ref["fills"], "the case must fill something"
    assert got == ref


@pytest.mark.parametrize("coc", [False, True])
def test_cheat_on_close_and_commission_equal_backbroker(coc):
    def setup(b):
        b.set_coc(coc)
        b.setcommission(commission=0.001)
    plan = CASES["market_round_trips"]
    ref = _outcome(*run(plan, setup=setup))
    got = _outcome(*run(plan, KnockoutBroker(product=KnockoutProduct.tracker()), setup=setup))
    assert got == ref and any(f[2] for f in ref["fills"])


def test_cheat_on_open_equals_backbroker():
    def open_plan(s, n):
        if n == 5:
            s.mem["open"] = float(s.data.open[0])
            s.buy(size=10)
        elif n == 30:
            s.close()
    strat, broker = run(lambda s, n: None, open_plan=open_plan, cheat_on_open=True)
    ref = _outcome(strat, broker)
    ko_strat, ko = run(lambda s, n: None, KnockoutBroker(product=KnockoutProduct.tracker()),
                       open_plan=open_plan, cheat_on_open=True)
    assert _outcome(ko_strat, ko) == ref
    assert ref["fills"][0][2] == pytest.approx(strat.mem["open"])   # the open of the bar it was placed on
