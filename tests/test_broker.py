"""Hand-computed scenarios for KnockoutBroker: every rule of the simulation has one."""
from __future__ import annotations

import math
from datetime import time

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from mltrade.feeds.bars import IndexData
from mltrade.feeds.sample import sample_intraday
from mltrade.products import KnockoutProduct
from tests.helpers import completed, make_bars, run

FLAT = (100.0, 100.5, 99.5, 100.0)


def buy(product, **kw):
    return lambda s: s.buy(data=s.data, product=product, **kw)


def sell(product, **kw):
    return lambda s: s.sell(data=s.data, product=product, **kw)


def test_market_buy_fills_at_next_open_ask_and_knockout_inside_bar():
    p = KnockoutProduct.turbo(1, 95.0, ratio=0.01)
    bars = make_bars([FLAT, (100, 101, 94, 96), (96, 97, 95.5, 96)])
    strat, broker = run(bars, {0: [buy(p, size=1000)]}, broker_kw={"commission_fixed": 1.0})
    rt = broker.roundtrips[0]
    assert rt["entry_price"] == pytest.approx((100 - 95) * 0.01)
    assert rt["exit_reason"] == "knockout" and rt["exit_price"] == 0.0
    assert broker.getcash() == pytest.approx(10_000 - 1000 * 0.05 - 1.0)
    assert rt["pnl"] == pytest.approx(-51.0)
    assert strat.kos and strat.kos[0]["gapped"] is False
    assert strat.trades_closed[0].pnl == pytest.approx(-50.0)  # backtrader's own Trade, before fees


def test_short_turbo_knocked_out_when_high_touches_barrier():
    p = KnockoutProduct.turbo(-1, 105.0, ratio=0.1)
    bars = make_bars([FLAT, (100, 105.0, 99, 101), FLAT])
    _, broker = run(bars, {0: [buy(p, size=10)]})
    assert broker.roundtrips[0]["exit_reason"] == "knockout"
    assert broker.getcash() == pytest.approx(10_000 - 10 * 0.5)


def test_gap_through_barrier_knocks_out_at_open_and_minifuture_pays_residual():
    p = KnockoutProduct(direction=1, strike=90.0, barrier=95.0, kind="minifuture", ratio=0.1, unwind="worst")
    bars = make_bars([FLAT, FLAT, (94, 94.5, 93, 94)])
    strat, broker = run(bars, {0: [buy(p, size=100)]})
    rt = broker.roundtrips[0]
    assert rt["exit_reason"] == "knockout"
    assert broker.knockouts[0]["gapped"] is True
    assert rt["exit_price"] == pytest.approx((93 - 90) * 0.1)  # worst price of the bar after the touch
    assert broker.getcash() == pytest.approx(10_000 - 100 * 1.0 + 100 * 0.3)


def test_residual_unwind_mode_barrier_uses_the_open_after_a_gap():
    p = KnockoutProduct(direction=1, strike=90.0, barrier=95.0, kind="minifuture", ratio=0.1, unwind="barrier")
    bars = make_bars([FLAT, FLAT, (94, 94.5, 93, 94)])
    _, broker = run(bars, {0: [buy(p, size=100)]})
    assert broker.roundtrips[0]["exit_price"] == pytest.approx((94 - 90) * 0.1)


def test_buy_on_a_product_knocked_out_at_the_open_is_rejected():
    p = KnockoutProduct.turbo(1, 95.0, ratio=0.1)
    bars = make_bars([FLAT, (94, 96, 93, 95.5)])
    strat, broker = run(bars, {0: [buy(p, size=10)]})
    rejected = [e for e in strat.events if e[0] == "Rejected"]
    assert rejected and rejected[0][4]["reject_reason"] == "knocked_out"
    assert broker.getcash() == 10_000


def test_stop_inside_bar_fills_at_stop_price():
    p = KnockoutProduct.turbo(1, 90.0, ratio=0.1)
    bars = make_bars([FLAT, FLAT, (99, 99.5, 97, 98)])
    _, broker = run(bars, {0: [buy(p, size=100, stop=0.71)]})
    rt = broker.roundtrips[0]
    assert rt["exit_reason"] == "stop"
    assert rt["exit_price"] == pytest.approx(0.71 * 1.0)          # stop level: S = 90 + 0.71/0.1 = 97.1
    assert rt["exit_underlying"] == pytest.approx(97.1)


def test_stop_with_a_gap_fills_at_the_open_bid():
    p = KnockoutProduct.turbo(1, 90.0, ratio=0.1, spread=0.01)
    bars = make_bars([FLAT, FLAT, (96, 96.5, 95, 96)])
    _, broker = run(bars, {0: [buy(p, size=100, stop=0.71)]})
    rt = broker.roundtrips[0]
    assert rt["exit_reason"] == "stop"
    assert rt["exit_price"] == pytest.approx((96 - 90) * 0.1 - 0.01)  # bid at the open, below the stop


def test_stop_before_knockout_when_the_stop_level_is_reached_first():
    p = KnockoutProduct.turbo(1, 95.0, ratio=0.1)
    bars = make_bars([FLAT, FLAT, (99, 99.5, 94, 95)])
    _, broker = run(bars, {0: [buy(p, size=100, stop=0.71)]})
    rt = broker.roundtrips[0]
    # path open 99 -> low 94: the stop level 95 + 0.355/0.1 = 98.55 comes before the barrier 95
    assert rt["exit_reason"] == "stop" and rt["exit_price"] == pytest.approx(0.71 * 0.5)
    assert not broker.knockouts


def test_knockout_before_stop_when_the_barrier_is_reached_first():
    p = KnockoutProduct(direction=1, strike=90.0, barrier=97.0, kind="minifuture", ratio=0.1)
    bars = make_bars([FLAT, FLAT, (99, 99.5, 94, 95)])
    _, broker = run(bars, {0: [buy(p, size=100, stop=0.5)]})   # stop level 95 lies below the barrier 97
    rt = broker.roundtrips[0]
    assert rt["exit_reason"] == "knockout"
    assert rt["exit_price"] == pytest.approx((94 - 90) * 0.1)


def test_short_path_walks_high_first():
    # short turbo: the adverse extreme is the high; a sell limit (take profit) at the low comes after it
    p = KnockoutProduct.turbo(-1, 110.0, ratio=0.1)
    bars = make_bars([FLAT, FLAT, (100, 110.5, 90, 95)])
    _, broker = run(bars, {0: [buy(p, size=10)], 1: [sell(p, size=10, exectype=bt.Order.Limit, price=1.8)]})
    assert broker.roundtrips[0]["exit_reason"] == "knockout"


def test_minifuture_financing_over_a_weekend():
    idx = pd.DatetimeIndex(["2019-01-04 15:50", "2019-01-04 15:55", "2019-01-07 09:30", "2019-01-07 09:35"]
                           ).tz_localize("America/New_York")
    bars = make_bars([FLAT, FLAT, FLAT, (101, 101.5, 100.5, 101)], index=idx)
    p = KnockoutProduct(direction=1, strike=90.0, kind="minifuture", barrier_buffer=0.02, ratio=0.1,
                        financing_rate=0.03, financing_spread=0.03)
    _, broker = run(bars, {0: [buy(p, size=100)], 2: [sell(p, size=100)]})
    k3 = 90.0 * (1 + 0.06 / 360) ** 3          # Friday -> Monday: three calendar days
    rt = broker.roundtrips[0]
    assert p.strike == pytest.approx(k3)
    assert p.barrier == pytest.approx(k3 * 1.02)
    assert rt["financing"] == pytest.approx((k3 - 90.0) * 0.1 * 100)
    assert rt["exit_price"] == pytest.approx((101 - k3) * 0.1)
    assert rt["pnl"] == pytest.approx(100 * ((101 - k3) * 0.1 - 1.0))


def test_short_minifuture_financing_lowers_the_strike_when_spread_exceeds_rate():
    p = KnockoutProduct(direction=-1, strike=110.0, kind="minifuture", barrier_buffer=0.02, financing_rate=0.01,
                        financing_spread=0.03)
    dk = p.apply_financing(2)
    assert p.strike == pytest.approx(110 * (1 + (0.01 - 0.03) / 360) ** 2)
    assert dk < 0 and p.barrier == pytest.approx(p.strike * 0.98)


def test_spread_fees_and_currency():
    p = KnockoutProduct.turbo(1, 90.0, ratio=0.1, spread=0.02, fx=0.9)
    bars = make_bars([FLAT, FLAT, (102, 102.5, 101.5, 102)])
    _, broker = run(bars, {0: [buy(p, size=100)], 1: [sell(p, size=100)]},
                    broker_kw={"commission_fixed": 1.0, "commission_pct": 0.001})
    ask = 10 * 0.1 * 0.9
    bid = 12 * 0.1 * 0.9 - 0.02
    fees = (1 + 0.001 * 100 * ask) + (1 + 0.001 * 100 * bid)
    rt = broker.roundtrips[0]
    assert rt["entry_price"] == pytest.approx(ask) and rt["exit_price"] == pytest.approx(bid)
    assert rt["fees"] == pytest.approx(fees)
    assert broker.getcash() == pytest.approx(10_000 + 100 * (bid - ask) - fees)


def test_value_is_marked_at_bid():
    p = KnockoutProduct.turbo(1, 90.0, ratio=0.1, spread=0.05)
    bars = make_bars([FLAT, FLAT, (101, 101.5, 100.5, 101)])
    strat, broker = run(bars, {0: [buy(p, size=100)]})
    assert strat.values[-1] == pytest.approx(10_000 - 100 * 1.0 + 100 * ((101 - 90) * 0.1 - 0.05))


def test_stake_orders_buy_whole_certificates():
    p = KnockoutProduct.turbo(1, 90.0, ratio=0.1, fx=0.9)
    bars = make_bars([FLAT, FLAT])
    strat, broker = run(bars, {0: [buy(p, size=None, stake=1000.0)]}, broker_kw={"commission_fixed": 1.0})
    n = math.floor((1000 - 1) / 0.9)
    assert completed(strat)[0][2] == n
    assert broker.getcash() == pytest.approx(10_000 - n * 0.9 - 1.0)


def test_fractional_certificates_when_allowed():
    p = KnockoutProduct.turbo(1, 90.0, ratio=0.1, fx=0.9)
    strat, _ = run(make_bars([FLAT, FLAT]), {0: [buy(p, size=None, stake=1000.0)]},
                   broker_kw={"fractional": True})
    assert completed(strat)[0][2] == pytest.approx(1000 / 0.9)


def test_insufficient_cash_is_a_margin_status_with_reason():
    p = KnockoutProduct.turbo(1, 90.0, ratio=0.1)
    strat, broker = run(make_bars([FLAT, FLAT]), {0: [buy(p, size=20_000)]})
    rej = [e for e in strat.events if e[0] == "Margin"]   # backtrader's status for it
    assert rej and rej[0][4]["reject_reason"] == "insufficient_cash"
    assert broker.getcash() == 10_000 and not broker.positions


def test_limit_orders_fill_at_their_price_when_reached():
    p = KnockoutProduct.turbo(1, 90.0, ratio=0.1)
    bars = make_bars([FLAT, (100, 100.5, 97, 99), (99, 103, 98.5, 102)])
    _, broker = run(bars, {0: [buy(p, size=10, exectype=bt.Order.Limit, price=0.8)],
                           1: [sell(p, size=10, exectype=bt.Order.Limit, price=1.2)]})
    rt = broker.roundtrips[0]
    assert rt["entry_price"] == pytest.approx(0.8) and rt["exit_price"] == pytest.approx(1.2)
    assert rt["entry_underlying"] == pytest.approx(98.0)


def test_limit_buy_below_the_open_price_fills_at_the_open_when_already_cheaper():
    p = KnockoutProduct.turbo(1, 90.0, ratio=0.1)
    bars = make_bars([FLAT, (97, 98, 96.5, 97.5)])
    _, broker = run(bars, {0: [buy(p, size=10, exectype=bt.Order.Limit, price=0.8)]})
    assert broker.positions[p.id].price == pytest.approx(0.7)


def test_close_exectype_fills_at_the_close_of_the_current_bar():
    p = KnockoutProduct.turbo(1, 90.0, ratio=0.1)
    bars = make_bars([FLAT, FLAT, (100, 104, 99.5, 103), FLAT])
    strat, broker = run(bars, {0: [buy(p, size=10)],
                               2: [lambda s: s.close_knockout(at_close=True, reason="session_end")]})
    rt = broker.roundtrips[0]
    assert rt["exit_price"] == pytest.approx(1.3) and rt["exit_reason"] == "session_end"


def test_last_bar_exit_is_delivered_to_the_strategy():
    p = KnockoutProduct.turbo(1, 90.0, ratio=0.1)
    strat, broker = run(make_bars([FLAT, FLAT, FLAT]), {0: [buy(p, size=10)],
                                                       2: [lambda s: s.close_knockout(at_close=True)]})
    assert len(completed(strat)) == 2 and strat.trades_closed


def test_several_products_at_once():
    lp = KnockoutProduct.turbo(1, 95.0, ratio=0.1)
    sp = KnockoutProduct.turbo(-1, 103.0, ratio=0.1)
    bars = make_bars([FLAT, FLAT, (100, 103.5, 99, 101), (101, 101.5, 94, 95)])
    _, broker = run(bars, {0: [buy(lp, size=10), buy(sp, size=10)]})
    reasons = {rt["direction"]: rt for rt in broker.roundtrips}
    assert reasons["short"]["exit_reason"] == "knockout" and reasons["short"]["exit_time"].endswith("09:40:00")
    assert reasons["long"]["exit_reason"] == "knockout" and reasons["long"]["exit_time"].endswith("09:45:00")
    assert broker.getcash() == pytest.approx(10_000 - 10 * 0.5 - 10 * 0.3)


def test_orders_wait_for_the_issuers_trading_hours():
    p = KnockoutProduct.turbo(1, 90.0, ratio=0.1, trading_hours=(time(9, 40), time(16, 0)))
    bars = make_bars([FLAT, (100, 100.5, 99.5, 100), (101, 101.5, 100.5, 101)])
    _, broker = run(bars, {0: [buy(p, size=10)]})
    assert broker.positions[p.id].price == pytest.approx(1.1)  # filled at the 09:40 open, not 09:35


def test_cross_check_with_backbroker_holding_the_index():
    bars = sample_intraday("2018-03-05", "2018-03-09")
    script = {5: [], 100: [], 200: []}

    class Trader(bt.Strategy):
        params = (("ko", False),)

        def __init__(self):
            self.values = []
            self.product = KnockoutProduct(direction=1, strike=0.0, ratio=1.0)

        def next(self):
            n = len(self) - 1
            kw = {"product": self.product} if self.p.ko else {}
            if n in (5, 200):
                self.buy(size=10, **kw)
            elif n in (100, 300):
                self.sell(size=10, **kw)
            self.values.append(self.broker.getvalue())

    curves = []
    for ko in (False, True):
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(IndexData(dataframe=bars))
        if ko:
            from mltrade.brokers import KnockoutBroker
            cerebro.broker = KnockoutBroker(cash=100_000.0)
        else:
            cerebro.broker.setcash(100_000.0)
        cerebro.addstrategy(Trader, ko=ko)
        curves.append(np.array(cerebro.run()[0].values))
    assert len(curves[0]) == len(bars)
    np.testing.assert_allclose(curves[1], curves[0], rtol=0, atol=1e-6)
    assert not np.allclose(curves[0], curves[0][0])  # the curve moves: the check is not vacuous


def test_orders_need_a_product():
    def bad(s):
        s.buy(data=s.data, size=1)
    with pytest.raises(ValueError, match="product"):
        run(make_bars([FLAT, FLAT]), {0: [bad]})


def test_cancel_pending_order():
    p = KnockoutProduct.turbo(1, 90.0, ratio=0.1)

    def place_and_cancel(s):
        o = s.buy(data=s.data, product=p, size=10, exectype=bt.Order.Limit, price=0.1)
        s.broker.cancel(o)
    strat, broker = run(make_bars([FLAT, FLAT]), {0: [place_and_cancel]})
    assert [e[0] for e in strat.events][-1] == "Canceled" and not broker.pending


def test_fx_feed_converts_prices_bar_by_bar():
    p = KnockoutProduct.turbo(1, 90.0, ratio=0.1, fx=1.0)
    bars = make_bars([FLAT, FLAT, (102, 102.5, 101.5, 102)])
    fx = make_bars([(0.5, 0.5, 0.5, 0.5), (0.5, 0.5, 0.5, 0.5), (0.8, 0.8, 0.8, 0.8)])
    cerebro = bt.Cerebro(stdstats=False)
    index = IndexData(dataframe=bars)
    cerebro.adddata(index)
    fxdata = IndexData(dataframe=fx)
    cerebro.adddata(fxdata)
    from mltrade.brokers import KnockoutBroker
    from tests.helpers import Scripted
    cerebro.broker = KnockoutBroker(cash=1000.0, fx_data=fxdata)
    cerebro.addstrategy(Scripted, script={0: [buy(p, size=100)], 1: [sell(p, size=100)]})
    cerebro.run()
    rt = cerebro.broker.roundtrips[0]
    assert rt["entry_price"] == pytest.approx(10 * 0.1 * 0.5)      # bought at fx 0.5
    assert rt["exit_price"] == pytest.approx(12 * 0.1 * 0.8)       # sold at fx 0.8


def test_an_order_never_fills_on_the_bar_it_was_decided_on():
    """A live cerebro calls broker.next() again before the next bar: the order must still wait for it."""
    p = KnockoutProduct.turbo(1, 90.0, ratio=0.1)
    calls = []

    def place_and_poll(s):
        s.buy(data=s.data, product=p, size=10)
        s.broker.next()                     # what a live cerebro does while waiting for data
        calls.append(dict(s.broker.positions))
    _, broker = run(make_bars([FLAT, FLAT, (101, 101.5, 100.5, 101)]), {1: [place_and_poll]})
    assert calls == [{}]
    assert broker.positions[p.id].price == pytest.approx(1.1)   # filled at the next bar's open


def test_last_bar_of_data_is_never_signalled_without_preload():
    p = KnockoutProduct.turbo(1, 90.0, ratio=0.1)
    flags = []
    bars = make_bars([FLAT] * 4)
    cerebro = bt.Cerebro(stdstats=False, preload=False)
    cerebro.adddata(IndexData(dataframe=bars))
    from mltrade.brokers import KnockoutBroker
    from tests.helpers import Scripted
    cerebro.broker = KnockoutBroker()
    cerebro.addstrategy(Scripted, script={i: [lambda s: flags.append(s.is_last_bar_of_data())] for i in range(4)})
    cerebro.run()
    assert flags == [False] * 4
    flags.clear()
    run(bars, {i: [lambda s: flags.append(s.is_last_bar_of_data())] for i in range(4)})
    assert flags == [False, False, False, True]


def test_a_new_product_is_not_knocked_out_by_the_bar_it_was_created_on():
    """The decision bar's low lay below the barrier before the close; only later bars can knock it out."""
    calls = []

    def decide_and_poll(s):
        p = KnockoutProduct.for_index(1, float(s.data.close[0]), distance=0.04, ratio=0.1)
        s.buy(data=s.data, product=p, size=10)
        s.broker.next()                     # a live cerebro polling before the next bar
        calls.append((p.barrier, list(s.broker.knockouts)))
    _, broker = run(make_bars([FLAT, (100, 100.5, 95, 100), (100, 100.5, 99.5, 100)]), {1: [decide_and_poll]})
    assert calls[0][0] == pytest.approx(96.0) and calls[0][1] == []
    assert not broker.knockouts and len(broker.positions) == 1


def test_unfilled_entry_orders_are_cancelled_at_the_session_end():
    from mltrade.strategies.base import KnockoutStrategy

    class LimitEntry(KnockoutStrategy):
        def on_bar(self):
            if self.session_bar() == 0:
                self.open_knockout(1, distance=0.04, size=10, exectype=bt.Order.Limit, price=0.01)

    bars = sample_intraday("2018-06-04", "2018-06-05")
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(IndexData(dataframe=bars))
    from mltrade.brokers import KnockoutBroker
    cerebro.broker = KnockoutBroker()
    cerebro.addstrategy(LimitEntry)
    strat = cerebro.run()[0]
    assert not cerebro.broker.pending and not cerebro.broker.positions
    assert len(strat._orders) > 0
