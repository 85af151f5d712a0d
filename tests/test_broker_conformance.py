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


# ---------------------------------------------------------------- turbo spec, by hand
FLAT = (100.0, 100.5, 99.5, 100.0)
SPEC = CertificateSpec(distance=0.05, ratio=0.1, spread=0.01)   # long: K = B = 95, short: K = B = 105 at 100


def spec_run(rows, plan_map, spec=SPEC):
    return run(at(plan_map), KnockoutBroker(product=spec), bars=make_bars(rows))


def test_spec_long_round_trip_on_the_certificate_ask_and_bid():
    strat, broker = spec_run([FLAT, FLAT, (102, 102.5, 101.5, 102), FLAT],
                             {0: lambda s: s.buy(size=10), 1: lambda s: s.sell(size=10)})
    assert [f[:3] for f in strat.fills] == [(True, 10, pytest.approx(0.5)), (False, -10, pytest.approx(0.69))]
    assert broker.getcash() == pytest.approx(10_000 - 10 * 0.5 + 10 * ((102 - 95) * 0.1 - 0.01))
    assert strat.trades == [pytest.approx(10 * (0.69 - 0.5))]


def test_spec_sell3_holding1_sells_the_long_and_buys_two_short_certificates():
    seen = {}

    def look(s):
        pos = s.getposition()
        seen.update(size=pos.size, price=pos.price, value=s.broker.getvalue())
    strat, broker = spec_run([FLAT, FLAT, (102, 102.5, 101.5, 102), (101, 101.5, 100.5, 101), FLAT],
                             {0: lambda s: s.buy(size=1), 1: lambda s: s.sell(size=3),
                              2: [look, lambda s: s.close()]})
    short_ask = (105 - 102) * 0.1            # short turbo chosen at the order's close 100: K = 105
    cash_after = 10_000 - 0.5 + 0.69 - 2 * short_ask
    assert seen["size"] == -2 and seen["price"] == pytest.approx(short_ask)
    assert seen["value"] == pytest.approx(cash_after + 2 * (short_ask - 0.01))      # short certificates at bid
    cover = (105 - 101) * 0.1 - 0.01
    assert broker.getcash() == pytest.approx(cash_after + 2 * cover)
    assert strat.trades == [pytest.approx(0.69 - 0.5), pytest.approx(2 * (cover - short_ask))]
    assert not strat.position.size


def test_spec_knockout_first_cancels_the_take_profit_and_pays_nothing():
    strat, broker = spec_run([FLAT, FLAT, (100, 104, 94, 96), FLAT],
                             {0: lambda s: s.buy(size=10),
                              1: lambda s: s.sell(size=10, exectype=bt.Order.Limit, price=103.0)})
    assert broker.knockouts and broker.knockouts[0]["barrier"] == pytest.approx(95.0)
    assert broker.getcash() == pytest.approx(10_000 - 10 * 0.5)
    assert ("Canceled" in [st for _, st in strat.statuses]) and strat.trades == [pytest.approx(-5.0)]
    assert not strat.position.size


def test_spec_stop_above_the_barrier_fills_before_the_knockout():
    strat, broker = spec_run([FLAT, FLAT, (99, 99.5, 94, 95), FLAT],
                             {0: lambda s: s.buy(size=10),
                              1: lambda s: s.sell(size=10, exectype=bt.Order.Stop, price=97.0)})
    assert not broker.knockouts
    assert strat.fills[-1][2] == pytest.approx((97 - 95) * 0.1 - 0.01)
    assert broker.getcash() == pytest.approx(10_000 - 5 + 10 * 0.19)


def test_spec_gap_through_the_barrier_knocks_out_at_the_open_before_a_market_exit():
    strat, broker = spec_run([FLAT, FLAT, (94, 95, 93, 94), FLAT],
                             {0: lambda s: s.buy(size=10), 1: lambda s: s.close()})
    assert broker.knockouts[0]["gapped"] is True
    assert broker.getcash() == pytest.approx(10_000 - 5)


def test_spec_minifuture_knockout_pays_the_residual():
    spec = CertificateSpec(distance=0.05, kind="minifuture", barrier_buffer=0.02, ratio=0.1)
    strat, broker = spec_run([FLAT, FLAT, (99, 99.5, 94, 95), FLAT], {0: lambda s: s.buy(size=10)}, spec=spec)
    strike = 95 / 1.02
    assert broker.getcash() == pytest.approx(10_000 - 10 * (100 - strike) * 0.1 + 10 * (94 - strike) * 0.1)


# ---------------------------------------------------------------- refusals and the broker contract
def test_orders_with_product_refuse_what_they_do_not_support_naming_it():
    p = KnockoutProduct.turbo(1, 90.0, ratio=0.1)
    for kw, name in (({"exectype": bt.Order.StopTrail, "trailamount": 1.0}, "trailamount"),
                     ({"exectype": bt.Order.StopLimit, "price": 1.0, "plimit": 0.9}, "StopLimit"),
                     ({"oco": object()}, "oco"), ({"transmit": False}, "transmit"), ({"tradeid": 3}, "tradeid")):
        with pytest.raises(ValueError, match=name):
            run(at({0: lambda s, kw=kw: s.buy(size=1, product=p, **kw)}), KnockoutBroker())


def test_default_product_orders_refuse_stake_and_fixed_certificates_are_not_sold_short():
    with pytest.raises(ValueError, match="stake"):
        run(at({0: lambda s: s.buy(size=1, stake=100.0)}), KnockoutBroker(product=KnockoutProduct.tracker()))
    strat, broker = run(at({0: lambda s: s.sell(size=1)}),
                        KnockoutBroker(product=KnockoutProduct.turbo(1, 80.0, ratio=0.1)))
    assert [st for _, st in strat.statuses][-1] == "Rejected" and broker.getcash() == 10_000
    with pytest.raises(ValueError, match="tracker"):
        run(at({0: lambda s: s.buy(size=1)}), KnockoutBroker())


def test_setcommission_maps_stock_like_fees_and_refuses_futures_like():
    b = KnockoutBroker()
    b.setcommission(commission=0.002)
    assert b.p.commission_pct == 0.002
    b.setcommission(commission=1.5, commtype=bt.CommInfoBase.COMM_FIXED, stocklike=True)
    assert b._comm_unit == 1.5 and b.p.commission_pct == 0.0
    for kw in ({"margin": 2000.0, "mult": 10.0}, {"commission": 2.0, "commtype": bt.CommInfoBase.COMM_FIXED},
               {"leverage": 2.0}, {"name": "index"}):
        with pytest.raises(ValueError, match="setcommission"):
            b.setcommission(**kw)


def test_backtrader_broker_names_and_standard_analyzers_match_backbroker():
    plan = CASES["short_from_flat"]
    out = []
    for broker in (None, KnockoutBroker(product=KnockoutProduct.tracker())):
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(IndexData(dataframe=BARS))
        if broker is not None:
            cerebro.broker = broker
        cerebro.broker.set_cash(5_000.0)
        cerebro.addstrategy(Plan, plan=plan)
        cerebro.addanalyzer(bt.analyzers.PositionsValue, _name="pv", cash=True)
        cerebro.addanalyzer(bt.analyzers.PyFolio, _name="pyf")
        cerebro.addanalyzer(bt.analyzers.TradeAnalyzer, _name="ta")
        strat = cerebro.run()[0]
        rets, positions, transactions, _ = strat.analyzers.pyf.get_pf_items()
        out.append((cerebro.broker.get_value(), cerebro.broker.get_cash(), strat.analyzers.pv.get_analysis(),
                    rets, positions, transactions, strat.analyzers.ta.get_analysis().total.closed))
    (v0, c0, pv0, r0, p0, t0, n0), (v1, c1, pv1, r1, p1, t1, n1) = out
    assert (v1, c1, n1) == pytest.approx((v0, c0, n0)) and n0 == 2
    assert pv1 == pv0 and any(v[0] < 0 for v in pv0.values())     # the short shows negative, as on BackBroker
    pd.testing.assert_series_equal(r1, r0)
    pd.testing.assert_frame_equal(p1, p0)
    pd.testing.assert_frame_equal(t1, t0)


def test_spec_order_target_size_and_close_across_long_and_short():
    sizes = []
    strat, broker = spec_run([FLAT, FLAT, (102, 102.5, 101.5, 102), FLAT, FLAT],
                             {0: lambda s: s.order_target_size(target=3),
                              1: lambda s: s.order_target_size(target=-5),
                              2: [lambda s: sizes.append(s.position.size), lambda s: s.close()],
                              3: lambda s: sizes.append(s.position.size)})
    assert sizes == [-5, 0]
    long_bid, short_ask, short_bid = (102 - 95) * 0.1 - 0.01, (105 - 102) * 0.1, (105 - 100) * 0.1 - 0.01
    assert broker.getcash() == pytest.approx(10_000 - 3 * 0.5 + 3 * long_bid - 5 * short_ask + 5 * short_bid)
    assert strat.fills[1][:3] == (False, -8, pytest.approx((3 * long_bid + 5 * short_ask) / 8))
    assert strat.trades == [pytest.approx(3 * (long_bid - 0.5)), pytest.approx(5 * (short_bid - short_ask))]


def test_orders_with_product_notify_submitted_and_honour_coc_and_coo():
    p = KnockoutProduct.turbo(1, 90.0, ratio=0.1)
    bars = make_bars([FLAT, (101, 101.5, 100.5, 101), (102, 102.5, 101.5, 102)])
    strat, _ = run(at({0: lambda s: s.buy(size=10, product=p)}), KnockoutBroker(), bars=bars)
    assert [st for _, st in strat.statuses] == ["Submitted", "Accepted", "Completed"]
    assert strat.fills[0][2] == pytest.approx((101 - 90) * 0.1)            # next open
    strat, _ = run(at({0: lambda s: s.buy(size=10, product=p)}), KnockoutBroker(coc=True), bars=bars)
    assert strat.fills[0][2] == pytest.approx((100 - 90) * 0.1)            # the decision bar's close
    opened = []

    def open_plan(s, n):
        if not opened:
            opened.append(float(s.data.open[0]))
            s.buy(size=10, product=p)
    strat, _ = run(lambda s, n: None, KnockoutBroker(), bars=bars, open_plan=open_plan, cheat_on_open=True)
    assert strat.fills[0][2] == pytest.approx((opened[0] - 90) * 0.1)      # the open of the bar it was placed on


def test_strategy_positions_by_data_and_by_name_are_backtraders():
    seen = []

    def look(s):
        seen.append((s.positions[s.data].size, s.positionsbyname[s.data._name].size, s.getposition().size))
    for broker in (None, KnockoutBroker(product=KnockoutProduct.tracker())):
        run(at({5: lambda s: s.sell(size=4), 7: look}), broker)
    assert seen == [(-4, -4, -4)] * 2
