"""KnockoutBroker vs backtrader's BackBroker on the same strategy and the same >= 100,000 bars.

Prints bars/s of each run, their ratio (target: KnockoutBroker at most 1.15x slower; also the
default-product path, ``KnockoutBroker(product=KnockoutProduct.tracker())`` with plain orders),
and the time to generate the whole 20-year synthetic intraday sample.
Run: python benchmarks/bench_broker.py [--bars N] [--repeat R] [--cpu]
(``--cpu`` times process CPU instead of wall time: steadier on a shared machine. With
``PYTHONPATH`` pointing at another checkout it times that checkout's broker: before/after.)
"""
from __future__ import annotations

import argparse
import time

import backtrader as bt

from mltrade.brokers import KnockoutBroker
from mltrade.feeds import IndexData, load_daily
from mltrade.feeds.sample import generate_intraday
from mltrade.products import KnockoutProduct


class SmaCross(bt.Strategy):
    """SMA(10/30) crossover: long on the cross up, flat on the cross down (a tracker or a turbo)."""

    params = (("product", None), ("size", 10))

    def __init__(self):
        self.cross = bt.ind.CrossOver(bt.ind.SMA(period=10), bt.ind.SMA(period=30))
        self.held = False

    def next(self):
        kw = {"product": self.p.product} if self.p.product is not None else {}
        if not self.held and self.cross[0] > 0:
            self.buy(size=self.p.size, **kw)
            self.held = True
        elif self.held and self.cross[0] < 0:
            self.sell(size=self.p.size, **kw)
            self.held = False


CLOCK = time.perf_counter


def run(bars, knockout) -> tuple[float, float]:
    """``knockout``: False (BackBroker), True (orders with product=) or "default" (a tracker default product)."""
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(IndexData(dataframe=bars))
    product = None
    if knockout == "default":
        cerebro.broker = KnockoutBroker(cash=1_000_000.0, product=KnockoutProduct.tracker())
    elif knockout:
        cerebro.broker = KnockoutBroker(cash=1_000_000.0)
        product = KnockoutProduct(direction=1, strike=0.0, ratio=1.0)
    else:
        cerebro.broker.setcash(1_000_000.0)
    cerebro.addstrategy(SmaCross, product=product)
    t = CLOCK()
    strat = cerebro.run()[0]
    dt = CLOCK() - t
    return dt, strat.broker.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bars", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cpu", action="store_true", help="time process CPU, not wall time")
    args = ap.parse_args()
    global CLOCK
    if args.cpu:
        CLOCK = time.process_time
    daily = load_daily()
    t = time.perf_counter()
    full = generate_intraday(daily, seed=42)
    gen = time.perf_counter() - t
    print(f"sample generation: {len(full):,} five-minute bars over {len(daily):,} days in {gen:.2f} s "
          f"({len(full) / gen:,.0f} bars/s)")
    bars = full.iloc[-args.bars:]
    best = {}
    runs = [("BackBroker", False), ("KnockoutBroker", True)]
    if hasattr(KnockoutProduct, "tracker"):     # checkouts before the default product have no tracker
        runs.append(("KO default", "default"))
    for name, ko in runs:
        times = []
        for _ in range(args.repeat):
            dt, value = run(bars, ko)
            times.append(dt)
        best[name] = min(times)
        print(f"{name:15s}: {len(bars):,} bars, best of {args.repeat}: {best[name]:.2f} s "
              f"= {len(bars) / best[name]:,.0f} bars/s (final value {value:,.2f})")
    ratio = best["KnockoutBroker"] / best["BackBroker"]
    print(f"ratio KnockoutBroker/BackBroker time: {ratio:.3f}x (target <= 1.15x)")
    if "KO default" in best:
        print(f"ratio KnockoutBroker(product=tracker), orders without product=, /BackBroker time: "
              f"{best['KO default'] / best['BackBroker']:.3f}x")


if __name__ == "__main__":
    main()
