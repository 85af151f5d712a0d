"""Run a backtest from a configuration: data → feed → strategy → KnockoutBroker → analyzers → report."""
from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Type

import backtrader as bt
import pandas as pd

from mltrade.analyzers import EquityCurve, KnockoutStats, KnockoutTrades, performance
from mltrade.brokers import KnockoutBroker
from mltrade.config import ConfigError
from mltrade.feeds.bars import IndexData
from mltrade.feeds.loader import load_csv
from mltrade.feeds.sample import sample_intraday
from mltrade.strategies.base import PRODUCT_PARAMS, KnockoutStrategy
from mltrade.strategies.reference import BuyAndHold, IntradayMomentum
from mltrade.strategies.registry import get_strategy, strategy_params


@dataclass
class BacktestResult:
    """What a run produced: figures, round trips, per-bar equity, the strategy instance, the report path."""

    summary: dict
    trades: pd.DataFrame
    equity: pd.DataFrame
    strategy: Optional[KnockoutStrategy] = None
    run_dir: Optional[Path] = None
    baselines: dict = field(default_factory=dict)


def bars_for(source: str, start: Optional[str] = None, end: Optional[str] = None, *, seed: int = 42,
             interval: int = 5, data_dir: str = "~/.mltrade/data", field: str = "backtest") -> pd.DataFrame:
    """Bars of ``source`` — ``sample``, a CSV path or ``twelvedata:SYMBOL`` (the fetch cache) — cut to
    the sessions ``start``..``end`` (inclusive). ``field`` names the config section in errors."""
    start, end = start or None, end or None
    if source == "sample":
        return sample_intraday(start, end, seed=int(seed), interval=int(interval))
    if str(source).startswith("twelvedata:"):
        return _cached_bars(source.split(":", 1)[1], f"{int(interval)}min", data_dir, start, end)
    df = load_csv(source)
    attrs = dict(df.attrs)
    tz = df.index.tz
    if start:
        df = df[df.index >= pd.Timestamp(start).tz_localize(tz)]
    if end:
        df = df[df.index < pd.Timestamp(end).tz_localize(tz) + pd.Timedelta(days=1)]
    if df.empty:
        raise ConfigError(f"{field}.start/end: no bars of {source} between {start} and {end}")
    df.attrs = attrs
    return df


def load_bars(cfg: dict) -> pd.DataFrame:
    """The bars a config's [backtest] section asks for (see :func:`bars_for`)."""
    b = cfg["backtest"]
    return bars_for(b["data"], b.get("start"), b.get("end"), seed=b["seed"], interval=b["interval"],
                    data_dir=cfg.get("twelvedata", {}).get("data_dir", "~/.mltrade/data"))


def _cached_bars(symbol: str, interval: str, data_dir: str, start: Optional[str],
                 end: Optional[str]) -> pd.DataFrame:
    """Bars of ``symbol`` from the local cache that ``mltrade data fetch`` fills."""
    from mltrade.calendars import calendar_for_symbol
    from mltrade.feeds.cache import BarCache

    cache = BarCache(data_dir)
    end_excl = str((pd.Timestamp(end) + pd.Timedelta(days=1)).date()) if end else None
    df = cache.load(symbol, interval, start, end_excl)
    if df.empty:
        raise ConfigError(f"backtest.data: no cached {interval} bars of {symbol} in {cache.path(symbol, interval)}"
                          f" between {start} and {end}; run `mltrade data fetch --symbol {symbol} "
                          f"--interval {interval} --start ...` first")
    df.attrs.update(symbol=symbol, calendar=calendar_for_symbol(symbol),
                    source=f"TwelveData cache {cache.path(symbol, interval)}", synthetic_intraday=False)
    return df


def strategy_kwargs(cls: Type[KnockoutStrategy], cfg: dict, extra: Optional[dict] = None) -> dict:
    """Product parameters from [product] plus [strategy.params], checked against the strategy's params."""
    valid = strategy_params(cls)
    kw = {k: v for k, v in cfg.get("product", {}).items() if k in dict(PRODUCT_PARAMS) and k in valid}
    for k, v in {**cfg["strategy"].get("params", {}), **(extra or {})}.items():
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
    b = cfg["broker"]
    cerebro = bt.Cerebro(stdstats=False, runonce=True, preload=True)
    data = IndexData(dataframe=bars, exchange=bars.attrs.get("calendar", cfg["backtest"]["exchange"]),
                     interval=int(cfg["backtest"]["interval"]) if cfg["backtest"]["interval"] else None)
    cerebro.adddata(data, name="index")
    cerebro.broker = KnockoutBroker(cash=float(cfg["backtest"]["cash"]), commission_fixed=b["commission_fixed"],
                                    commission_pct=b["commission_pct"], fractional=b["fractional"])
    cerebro.addstrategy(cls, **kwargs)
    cerebro.addanalyzer(KnockoutTrades, _name="ko_trades")
    cerebro.addanalyzer(EquityCurve, _name="equity")
    if progress:
        cerebro.addanalyzer(_Progress, total=len(bars), desc=desc)
    strat = cerebro.run()[0]
    trades = strat.analyzers.ko_trades.to_frame()
    equity = strat.analyzers.equity.to_frame()
    summary = performance(equity, trades, float(cfg["backtest"]["cash"]))
    return BacktestResult(summary=summary, trades=trades, equity=equity, strategy=strat)


def baseline_runs(bars: pd.DataFrame, cls: Type[KnockoutStrategy], kwargs: dict, cfg: dict,
                  progress: bool = False) -> dict:
    """Buy-and-hold, always-long and random-direction runs on the same bars and certificates."""
    out = {}
    bh = run_strategy(bars, BuyAndHold, {}, cfg, progress, "buy-and-hold")
    out["buy_and_hold"] = bh.summary
    mom_valid = strategy_params(IntradayMomentum)
    # the overlay reviews the strategy's decisions only: baselines never call it
    common = {k: v for k, v in kwargs.items()
              if k in mom_valid and k not in ("direction_rule", "seed", "min_move", "overlay")}
    for name, rule in (("always_long", "long"), ("random_direction", "random")):
        kw = dict(common, direction_rule=rule, seed=int(cfg["backtest"]["baseline_seed"]))
        out[name] = run_strategy(bars, IntradayMomentum, kw, cfg, progress, name).summary
    return out


def _extras(strat: KnockoutStrategy):
    """Report sections/figures the strategy and its overlay contribute (``report_sections``/``report_figures``)."""
    sections, figures = [], []
    overlay = getattr(strat.p, "overlay", None)
    for obj, kw in ((strat, {}), (overlay, {"strategy": strat})):
        if obj is None:
            continue
        if hasattr(obj, "report_sections"):
            sections += list(obj.report_sections(**kw))
        if hasattr(obj, "report_figures"):
            figures += list(obj.report_figures(**kw))
    return sections, figures


def run_backtest(cfg: dict, run_name: Optional[str] = None, progress: bool = False, report: bool = True,
                 extra_params: Optional[dict] = None) -> BacktestResult:
    """Run the configured strategy (plus baselines) and write the report into ``<out>/<run_name>/``."""
    name = cfg["strategy"]["name"]
    cls = get_strategy(name)
    kwargs = strategy_kwargs(cls, cfg, extra_params)
    bars = load_bars(cfg)
    result = run_strategy(bars, cls, kwargs, cfg, progress, name)
    synthetic = bool(bars.attrs.get("synthetic_intraday", False))
    result.summary.update(strategy=name, data=str(cfg["backtest"]["data"]), synthetic_intraday=synthetic,
                          data_source=bars.attrs.get("source", ""), params={k: v for k, v in kwargs.items()
                                                                             if k != "overlay"})
    overlay = kwargs.get("overlay")
    if overlay is not None and hasattr(overlay, "summary"):
        result.summary["llm"] = overlay.summary(strategy=result.strategy)
        if hasattr(overlay, "summary_line"):  # per-review lines are DEBUG: one line sums the run up
            logging.getLogger("mltrade.llm").info(overlay.summary_line())
    if cfg["backtest"]["baselines"]:
        result.baselines = baseline_runs(bars, cls, kwargs, cfg, progress)
    if report:
        run_name = run_name or f"{name}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
        result.run_dir = Path(cfg["backtest"]["out"]) / run_name
        from mltrade.report import write_report
        sections, figures = _extras(result.strategy)
        write_report(result.run_dir, result.summary, result.trades, result.equity, sections, figures,
                     baselines=result.baselines or None)
    return result
