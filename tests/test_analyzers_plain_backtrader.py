"""mltrade's analyzers and report on plain backtrader runs (backtrader's own feeds and BackBroker)."""
from __future__ import annotations

import backtrader as bt
import numpy as np
import pandas as pd

from mltrade.analyzers.performance import EquityCurve, KnockoutStats, KnockoutTrades
from mltrade.brokers import KnockoutBroker
from mltrade.cli import main
from mltrade.products import KnockoutProduct


class EveryFifth(bt.Strategy):
    """Buys 3 on every tenth bar and closes five bars later (a plain backtrader strategy)."""

    def next(self):
        if len(self) % 5 == 0:
            if self.position:
                self.close()
            else:
                self.buy(size=3)


def _daily_csv(tmp_path):
    idx = pd.bdate_range("2006-12-01", "2007-01-31")
    c = 100 * np.exp(np.cumsum(np.random.default_rng(1).normal(0, 0.01, len(idx))))
    df = pd.DataFrame({"open": c * 0.999, "high": c * 1.01, "low": c * 0.99, "close": c, "volume": 1000,
                       "openinterest": 0}, index=pd.Index(idx, name="date"))
    path = tmp_path / "daily.csv"
    df.to_csv(path, date_format="%Y-%m-%d")
    return path, idx


def _run(data, broker=None):
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(data)
    if broker is not None:
        cerebro.broker = broker
    cerebro.addstrategy(EveryFifth)
    cerebro.addanalyzer(KnockoutTrades, _name="trades")
    cerebro.addanalyzer(EquityCurve, _name="equity")
    cerebro.addanalyzer(KnockoutStats, _name="stats")
    cerebro.addanalyzer(bt.analyzers.TradeAnalyzer, _name="ta")
    return cerebro.run()[0]


def test_daily_backtrader_feed_trades_counted_and_dates_exact(tmp_path):
    path, idx = _daily_csv(tmp_path)
    data = bt.feeds.GenericCSVData(dataname=str(path), dtformat="%Y-%m-%d", datetime=0, open=1, high=2, low=3,
                                   close=4, volume=5, openinterest=6)
    strat = _run(data)
    assert strat.data.datetime.time(0).microsecond > 0           # backtrader's 23:59:59.999989 stamps
    eq = strat.analyzers.equity.to_frame()
    assert list(eq.index) == list(idx)                           # 2006-12-29 stays Friday 2006-12-29
    closed = strat.analyzers.ta.get_analysis().total.closed
    trades = strat.analyzers.trades.to_frame()
    assert closed >= 3 and len(trades) == closed and strat.analyzers.stats.get_analysis()["trades"] == closed
    first = trades.iloc[0]
    assert first["size"] == 3 and first["direction"] == "long"
    assert abs((first["exit_price"] - first["entry_price"]) * 3 - first["pnl"]) < 1e-9   # no fees here
    assert pd.Timestamp(first["entry_time"]) in set(idx) and pd.Timestamp(first["exit_time"]) in set(idx)

def test_intraday_pandas_feed_dates_exact_and_report_rebuilds(tmp_path):
    idx = pd.date_range("2019-03-04 14:30", periods=120, freq="5min")
    c = 100 + np.cumsum(np.random.default_rng(2).normal(0, 0.1, len(idx)))
    df = pd.DataFrame({"open": c, "high": c + 0.1, "low": c - 0.1, "close": c, "volume": 1.0}, index=idx)
    strat = _run(bt.feeds.PandasData(dataname=df, timeframe=bt.TimeFrame.Minutes, compression=5),
                 KnockoutBroker(product=KnockoutProduct.tracker()))
    eq = strat.analyzers.equity.to_frame()
    assert list(eq.index) == list(idx)
    assert len(strat.analyzers.trades.to_frame()) == strat.analyzers.ta.get_analysis().total.closed > 0
    from mltrade.report import write_strategy_report
    run_dir = tmp_path / "plain"
    write_strategy_report(run_dir, strat)
    (run_dir / "report.html").unlink()
    assert main(["report", str(run_dir)]) == 0
    html = (run_dir / "report.html").read_text()
    assert "EveryFifth" in html and "Trades" in html


def test_trades_of_a_certificate_spec_name_their_certificates():
    from tests.helpers import make_bars
    from mltrade.feeds.bars import IndexData
    from mltrade.products import CertificateSpec

    flat = (100.0, 100.5, 99.5, 100.0)
    bars = make_bars([flat, flat, (102, 102.5, 101.5, 102), flat, (99, 99.5, 98.5, 99), flat] * 3)
    strat = _run(IndexData(dataframe=bars), KnockoutBroker(product=CertificateSpec(distance=0.05, ratio=0.1)))
    rows = strat.analyzers.trades.to_frame()
    assert len(rows) == strat.analyzers.ta.get_analysis().total.closed > 0
    first = rows.iloc[0]
    assert first["kind"] == "turbo" and first["ratio"] == 0.1 and first["direction"] == "long"
    # chosen from the close the buy saw: bar 5 (EveryFifth buys at len 5) closes at 99
    assert first["barrier"] == first["strike"] == 99.0 * 0.95
