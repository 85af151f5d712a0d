"""One backtrader run of one strategy on bars: a KnockoutBroker set from [broker]/[backtest], the
round-trip and equity analyzers, the summary figures (:class:`BacktestResult`).

:mod:`mltrade.backtest` runs the configured strategy through here, :mod:`mltrade.baselines.runs` the
baselines beside it, the sweep each trial it re-runs on the broker.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Type

import backtrader as bt
import pandas as pd

from mltrade.analyzers import EquityCurve, KnockoutTrades, performance
from mltrade.annualise import sessions_per_year
from mltrade.brokers import KnockoutBroker
from mltrade.config import ConfigError
from mltrade.feeds.bars import IndexData
from mltrade.products import CertificateSpec
from mltrade.settings import settings_of
from mltrade.strategies.base import PRODUCT_PARAMS, KnockoutStrategy
from mltrade.strategies.registry import is_plain, strategy_params

__all__ = ["BacktestResult", "strategy_kwargs", "run_strategy"]


@dataclass
class BacktestResult:
    """What a run produced: figures, round trips, per-bar equity, the strategy instance, the report path."""

    summary: dict
    trades: pd.DataFrame
    equity: pd.DataFrame
    strategy: Optional[KnockoutStrategy] = None
    run_dir: Optional[Path] = None
    baselines: dict = field(default_factory=dict)            #: name -> summary
    baseline_results: dict = field(default_factory=dict)     #: name -> BacktestResult (equity, trades)


def strategy_kwargs(cls: Type[KnockoutStrategy], cfg: dict, extra: Optional[dict] = None) -> dict:
    """Product parameters from [product] (unless the class sets ``uses_product_config = False``, like the
    buy-and-hold tracker) plus [strategy.params], checked against the strategy's params."""
    valid = strategy_params(cls)
    s = settings_of(cfg)
    product = s.product.to_dict() if getattr(cls, "uses_product_config", True) else {}
    kw = {k: v for k, v in product.items() if k in dict(PRODUCT_PARAMS) and k in valid}
    for k, v in {**s.strategy.params, **(extra or {})}.items():
        if k not in valid:
            raise ConfigError(f"strategy.params: unknown parameter '{k}' for {cls.__name__}; "
                              f"valid: {', '.join(sorted(valid))}")
        kw[k] = v
    return kw


class _Progress(bt.Analyzer):
    params = (("total", 0), ("desc", "backtest"))

    def start(self) -> None:
        from tqdm import tqdm
        self._bar = tqdm(total=self.p.total, desc=self.p.desc, unit="bar", mininterval=0.5, leave=False)
        self._n = 0

    def next(self) -> None:
        self._n += 1
        if self._n % 2000 == 0:
            self._bar.update(2000)

    def stop(self) -> None:
        self._bar.update(self._n % 2000)
        self._bar.close()


def run_strategy(bars: pd.DataFrame, cls: Type[KnockoutStrategy], kwargs: dict, cfg: dict,
                 progress: bool = False, desc: str = "backtest") -> BacktestResult:
    """One backtrader run of ``cls`` on ``bars`` with a KnockoutBroker set from [broker]/[backtest]."""
    s = settings_of(cfg)
    b, run = s.broker, s.backtest
    cerebro = bt.Cerebro(stdstats=False, runonce=True, preload=True)
    data = IndexData(dataframe=bars, exchange=bars.attrs.get("calendar", run.exchange),
                     interval=int(run.interval) if run.interval else None)
    cerebro.adddata(data, name="index")
    # a plain backtrader strategy orders without product=: its certificates come from [product]
    default = CertificateSpec.from_config(s.product.to_dict()) if is_plain(cls) else None
    cerebro.broker = KnockoutBroker(cash=float(run.cash), commission_fixed=b.commission_fixed,
                                    commission_pct=b.commission_pct, fractional=b.fractional, product=default)
    cerebro.addstrategy(cls, **kwargs)
    cerebro.addanalyzer(KnockoutTrades, _name="ko_trades")
    cerebro.addanalyzer(EquityCurve, _name="equity")
    if progress:
        cerebro.addanalyzer(_Progress, total=len(bars), desc=desc)
    strat = cerebro.run()[0]
    trades = strat.analyzers.ko_trades.to_frame()
    equity = strat.analyzers.equity.to_frame()
    periods = sessions_per_year(bars.index, bars.attrs.get("calendar") or run.exchange or None)
    summary = performance(equity, trades, float(run.cash), periods=periods)
    return BacktestResult(summary=summary, trades=trades, equity=equity, strategy=strat)
