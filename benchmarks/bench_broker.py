"""KnockoutBroker vs backtrader's BackBroker on the same strategy and the same >= 100,000 bars.

Prints bars/s of each run and the time ratio of every round (target: KnockoutBroker at most 1.15x slower):
the rounds interleave the two brokers, alternating which goes first, so load that changes during the run
falls on both; the median and the spread of the per-round ratios are printed beside the best-of ratio.
Also the time to generate the whole 20-year synthetic intraday sample.
Run: python benchmarks/bench_broker.py [--bars N] [--repeat R] (R >= 5 for a spread worth reading)
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


def run(bars, knockout: bool) -> tuple[float, float]:
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(IndexData(dataframe=bars))
    product = None
    if knockout:
        cerebro.broker = KnockoutBroker(cash=1_000_000.0)
        product = KnockoutProduct(direction=1, strike=0.0, ratio=1.0)
    else:
        cerebro.broker.setcash(1_000_000.0)
    cerebro.addstrategy(SmaCross, product=product)
    t = time.perf_counter()
    strat = cerebro.run()[0]
    dt = time.perf_counter() - t
    return dt, strat.broker.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bars", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    daily = load_daily()
    t = time.perf_counter()
    full = generate_intraday(daily, seed=42)
    gen = time.perf_counter() - t
    print(f"sample generation: {len(full):,} five-minute bars over {len(daily):,} days in {gen:.2f} s "
          f"({len(full) / gen:,.0f} bars/s)")
    bars = full.iloc[-args.bars:]
    # interleaved rounds (the order alternates): a change of load between two blocks of runs cannot pose as
    # a difference between the brokers; each round's ratio is printed with their spread
    times = {"BackBroker": [], "KnockoutBroker": []}
    values = {}
    ratios = []
    for r in range(args.repeat):
        order = (("BackBroker", False), ("KnockoutBroker", True))
        for name, ko in (order if r % 2 == 0 else order[::-1]):
            dt, values[name] = run(bars, ko)
            times[name].append(dt)
        ratios.append(times["KnockoutBroker"][-1] / times["BackBroker"][-1])
    for name, ts in times.items():
        best = min(ts)
        print(f"{name:15s}: {len(bars):,} bars, best of {args.repeat}: {best:.2f} s = {len(bars) / best:,.0f} bars/s "
              f"(rounds: {', '.join(f'{t:.2f}' for t in ts)} s; final value {values[name]:,.2f})")
    ratios_sorted = sorted(ratios)
    median = ratios_sorted[len(ratios) // 2] if len(ratios) % 2 else \
        0.5 * (ratios_sorted[len(ratios) // 2 - 1] + ratios_sorted[len(ratios) // 2])
    print(f"ratio KnockoutBroker/BackBroker time per round: {', '.join(f'{x:.3f}' for x in ratios)}")
    print(f"  median {median:.3f}x, spread {ratios_sorted[0]:.3f}x .. {ratios_sorted[-1]:.3f}x over {len(ratios)} "
          f"interleaved rounds; best-of ratio {min(times['KnockoutBroker']) / min(times['BackBroker']):.3f}x "
          f"(target <= 1.15x)")

if __name__ == "__main__":
    main()
