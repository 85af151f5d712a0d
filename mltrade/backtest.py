"""Run a backtest from a configuration: data → feed → strategy → KnockoutBroker → analyzers → report."""
from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Type

import backtrader as bt
import pandas as pd

from mltrade.analyzers import EquityCurve, KnockoutTrades, daily_returns, performance
from mltrade.brokers import KnockoutBroker
from mltrade.config import ConfigError
from mltrade.feeds.bars import IndexData
from mltrade.feeds.loader import load_csv
from mltrade.feeds.sample import sample_intraday
from mltrade.strategies.base import PRODUCT_PARAMS, KnockoutStrategy
from mltrade.strategies.model_info import ModelScope, model_scope
from mltrade.strategies.reference import BuyAndHold, IntradayMomentum
from mltrade.products import CertificateSpec
from mltrade.strategies.registry import get_strategy, is_plain, strategy_params


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


def bars_for(source: str, start: Optional[str] = None, end: Optional[str] = None, *, seed: int = 42,
             interval: int = 5, data_dir: str = ".mltrade/data", field: str = "backtest") -> pd.DataFrame:
    """Bars of ``source`` — ``sample``, a CSV path or ``twelvedata:SYMBOL`` (the fetch cache) — cut to
    the sessions ``start``..``end`` (inclusive). ``field`` names the config section in errors."""
    start, end = start or None, end or None
    first, last = (_date_of(v, f"{field}.{k}") for v, k in ((start, "start"), (end, "end")))
    if first is not None and last is not None and first > last:
        raise ConfigError(f"{field}.start/end: the start {start} is after the end {end}")
    if source == "sample":
        return _clip_note(sample_intraday(start, end, seed=int(seed), interval=int(interval)), start, end, source, field)
    if str(source).startswith("twelvedata:"):
        symbol = source.split(":", 1)[1].strip()
        if not symbol:
            raise ConfigError(f"{field}.data: {source!r} names no symbol; expected twelvedata:SYMBOL, e.g. twelvedata:NDX")
        return _clip_note(_cached_bars(symbol, f"{int(interval)}min", data_dir, start, end), start, end, source, field)
    df = load_csv(source)
    attrs = dict(df.attrs)
    tz = df.index.tz
    if start:
        df = df[df.index >= pd.Timestamp(start).tz_localize(tz)]
    if end:
        df = df[df.index < pd.Timestamp(end).tz_localize(tz) + pd.Timedelta(days=1)]
    if df.empty:
        raise ConfigError(f"{field}.start/end: no bars of {source} {_between(start, end)}")
    df.attrs = attrs
    return _clip_note(df, start, end, source, field)


def _between(start: Optional[str], end: Optional[str]) -> str:
    """"between 2019-01-01 and 2019-06-01", "from 2019-01-01 on", "up to ...", "at all"."""
    if start and end:
        return f"between {start} and {end}"
    return f"from {start} on" if start else f"up to {end}" if end else "at all"


#: a requested start or end this many days beyond the first / last bar is reported as clipped
CLIP_SLACK_DAYS = 5


def _clip_note(df: pd.DataFrame, start: Optional[str], end: Optional[str], source: str, field: str) -> pd.DataFrame:
    """Say in one line (stderr) when the requested range reaches beyond the data and was clipped to it."""
    if df.empty:
        return df
    first, last = df.index[0].date(), df.index[-1].date()
    slack = pd.Timedelta(days=CLIP_SLACK_DAYS)
    cut = []
    if start and pd.Timestamp(start) < pd.Timestamp(first) - slack:
        cut.append(f"start {start}")
    if end and pd.Timestamp(end) > pd.Timestamp(last) + slack:
        cut.append(f"end {end}")
    if cut:
        import sys
        print(f"mltrade: note: [{field}] {' and '.join(cut)} outside the data of {source}; "
              f"running its sessions {first} .. {last}", file=sys.stderr)
    return df


def _date_of(value: Optional[str], name: str) -> Optional[pd.Timestamp]:
    """``value`` as a date, or a ConfigError naming ``name`` (``backtest.start``) and what was expected."""
    if value is None:
        return None
    try:
        return pd.Timestamp(str(value))
    except (ValueError, TypeError):
        raise ConfigError(f"{name}: expected a date (YYYY-MM-DD), got {value!r}") from None


def load_bars(cfg: dict) -> pd.DataFrame:
    """The bars a config's [backtest] section asks for (see :func:`bars_for`)."""
    b = cfg["backtest"]
    return bars_for(b["data"], b.get("start"), b.get("end"), seed=b["seed"], interval=b["interval"],
                    data_dir=cfg.get("twelvedata", {}).get("data_dir", ".mltrade/data"))


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
                          f" {_between(start, end)}; run `mltrade data fetch --symbol {symbol} "
                          f"--interval {interval} --start ...` first")
    df.attrs.update(symbol=symbol, calendar=calendar_for_symbol(symbol),
                    source=f"TwelveData cache {cache.path(symbol, interval)}", synthetic_intraday=False)
    return df


def strategy_kwargs(cls: Type[KnockoutStrategy], cfg: dict, extra: Optional[dict] = None) -> dict:
    """Product parameters from [product] (unless the class sets ``uses_product_config = False``, like the
    buy-and-hold tracker) plus [strategy.params], checked against the strategy's params."""
    valid = strategy_params(cls)
    product = cfg.get("product", {}) if getattr(cls, "uses_product_config", True) else {}
    kw = {k: v for k, v in product.items() if k in dict(PRODUCT_PARAMS) and k in valid}
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
    # a plain backtrader strategy orders without product=: its certificates come from [product]
    default = CertificateSpec.from_config(cfg["product"]) if is_plain(cls) else None
    cerebro.broker = KnockoutBroker(cash=float(cfg["backtest"]["cash"]), commission_fixed=b["commission_fixed"],
                                    commission_pct=b["commission_pct"], fractional=b["fractional"],
                                    product=default)
    cerebro.addstrategy(cls, **kwargs)
    cerebro.addanalyzer(KnockoutTrades, _name="ko_trades")
    cerebro.addanalyzer(EquityCurve, _name="equity")
    if progress:
        cerebro.addanalyzer(_Progress, total=len(bars), desc=desc)
    strat = cerebro.run()[0]
    trades = strat.analyzers.ko_trades.to_frame()
    equity = strat.analyzers.equity.to_frame()
    from mltrade.significance import sessions_per_year
    periods = sessions_per_year(bars.index, bars.attrs.get("calendar") or cfg["backtest"].get("exchange") or None)
    summary = performance(equity, trades, float(cfg["backtest"]["cash"]), periods=periods)
    return BacktestResult(summary=summary, trades=trades, equity=equity, strategy=strat)


def baseline_kwargs(kwargs: dict) -> dict:
    """The strategy's certificate, stake and stop parameters that the rule baselines share."""
    from mltrade.strategies.reference import SessionBaseline

    valid = set(strategy_params(IntradayMomentum)) & set(strategy_params(SessionBaseline))
    skip = {"direction_rule", "seed", "min_move", "decision_bar", "overlay", "context_candles", "session"}
    return {k: v for k, v in kwargs.items() if k in valid and k not in skip}


def _run_frames(equity: pd.DataFrame, trades: pd.DataFrame, cfg: dict) -> BacktestResult:
    from mltrade.significance import sessions_per_year
    periods = sessions_per_year(equity.index, cfg["backtest"].get("exchange") or None) if len(equity) else None
    return BacktestResult(summary=performance(equity, trades, float(cfg["backtest"]["cash"]), periods=periods),
                          trades=trades, equity=equity)


def baseline_runs(bars: pd.DataFrame, cls: Type[KnockoutStrategy], kwargs: dict, cfg: dict,
                  progress: bool = False, scope: Optional[ModelScope] = None, engine: str = "auto") -> dict:
    """The baselines' summaries ``{name: summary}`` (see :func:`baseline_results`)."""
    runs = baseline_results(bars, cls, kwargs, cfg, progress, scope, engine)
    return {k: r.summary for k, r in runs.items()}


def baseline_results(bars: pd.DataFrame, cls: Type[KnockoutStrategy], kwargs: dict, cfg: dict,
                     progress: bool = False, scope: Optional[ModelScope] = None,
                     engine: str = "auto", distances: Optional[dict] = None) -> dict:
    """Buy-and-hold (fully invested), always-long and random-direction runs on the same bars.

    The rule baselines trade the strategy's certificates in its session kind (``scope.session``:
    intraday after ``scope.decision_bar`` candles, day or night). ``engine``: ``auto`` (vectorised
    engines where they apply, equal to backtrader to the cent), ``backtrader`` (every run through
    backtrader). ``distances``: day/night baselines' barrier per decision date (the DQN ensemble's own,
    ``DQNEnsembleStrategy.baseline_distances``). Returns ``{name: BacktestResult}``.
    """
    from mltrade import vector_baselines as fast
    from mltrade.strategies.reference import SessionBaseline

    if engine not in ("auto", "backtrader"):
        raise ValueError(f"engine: expected 'auto' or 'backtrader', got {engine!r}")
    scope = scope or ModelScope(cfg["strategy"]["name"], decision_bar=int(kwargs.get("decision_bar", 17)))
    b = cfg["broker"]
    cash = float(cfg["backtest"]["cash"])
    out: dict = {}
    if engine == "auto":
        eq, tr = fast.buy_and_hold_frames(bars, cash, float(b["commission_fixed"]), float(b["commission_pct"]),
                                          bool(b["fractional"]))
        out["buy_and_hold"] = _run_frames(eq, tr, cfg)
    else:
        out["buy_and_hold"] = run_strategy(bars, BuyAndHold, {}, cfg, progress, "buy-and-hold")
    common = baseline_kwargs(kwargs)
    seed = int(cfg["backtest"]["baseline_seed"])
    for name, rule in (("always_long", "long"), ("random_direction", "random")):
        if scope.session in ("day", "night"):
            kw = dict(common, session=scope.session, direction_rule=rule, seed=seed, distances=distances)
            out[name] = run_strategy(bars, SessionBaseline, kw, cfg, progress, name)
            continue
        if engine == "auto":
            try:
                res = fast.rule_sweep(bars, common, cfg, rule, scope.decision_bar)
            except ValueError:
                res = None          # gaps in the bars, fractional sizing: backtrader below
            if res is not None:
                out[name] = _run_frames(*fast.sweep_frames(res, 0), cfg)
                continue
        kw = dict(common, decision_bar=scope.decision_bar, direction_rule=rule, seed=seed)
        out[name] = run_strategy(bars, IntradayMomentum, kw, cfg, progress, name)
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


def train_default_model(scope: ModelScope, params: dict, cfg: dict, progress: bool = True,
                        log: Callable[[str], None] = print) -> None:
    """Train the default model of ``scope.strategy`` (DQN or NCP) into the registry the strategy reads."""
    if scope.strategy == "dqn":
        from mltrade.models.dqn.pipeline import train_walk_forward

        dcfg = dict(cfg["dqn"], registry=str(params.get("registry", cfg["dqn"].get("registry"))),
                    name=str(params.get("model_name", cfg["dqn"].get("name"))))
        if scope.session not in dcfg.get("sessions", []):
            dcfg["sessions"] = list(dcfg.get("sessions", [])) + [scope.session]
        log(f"no DQN model in {dcfg['registry']}/{dcfg['name']}: training the default model first "
            f"(`mltrade train dqn`, [dqn] config; sessions {', '.join(dcfg['sessions'])})")
        summary = train_walk_forward(dcfg, progress=progress, log=lambda m: None)
        if not summary.get("kept"):
            from mltrade.models.dqn.pipeline import refusal_advice
            raise ConfigError(refusal_advice(summary, dcfg))
        log(f"trained and kept {summary['model_dir']} ({summary['seconds']} s)"
            + (f"; warning: {summary['below_baselines_reason']}" if summary.get("below_baselines") else ""))
    elif scope.strategy == "ncp":
        from mltrade.models.ncp.data import dataset_for
        from mltrade.models.ncp.final import train_final
        from mltrade.models.ncp.settings import NCPSettings

        s = NCPSettings.from_config(cfg)
        want = Path(str(params.get("model_path", ".mltrade/models/ncp/current")))
        if want.name == "current":
            s.state_dir = str(want.parent.parent.parent)
            s.model_name = want.parent.name
        log(f"no NCP model at {want}: training the default model first (`mltrade train ncp --defaults`, "
            f"[ncp] config)")
        res = train_final({"epochs": s.max_epochs}, dataset_for(s), s, verbose=1 if progress else 0)
        lad = res.metrics.get("ladder", {}).get("verdict", {}).get("words")
        if lad:
            log(lad)
        if not res.kept:
            why = (f"degenerate: {res.metrics.get('degenerate_reason')}" if res.degenerate
                   else "the registry's kept model did better on validation")
            raise ConfigError(f"the default NCP model was trained but not kept by the registry ({why}); "
                              f"search for one that learns with `mltrade optimize ncp --trials 20`, or change "
                              f"[ncp] (mltrade/config.d/ncp.toml) and run `mltrade train ncp --defaults`")
    else:
        raise ValueError(f"strategy {scope.strategy!r} has no model to train")


def check_range(scope: ModelScope, start: Optional[str], end: Optional[str], allow_in_sample: bool) -> bool:
    """True when ``start``..``end`` is out of sample for the model; an in-sample range raises unless allowed."""
    first = scope.first_out_of_sample()
    if not scope.has_model or first is None:
        return True
    if start and pd.Timestamp(start) >= first:
        return True
    if allow_in_sample:
        return False
    span = f"{start or 'the data start'} .. {end or 'the data end'}"
    raise ConfigError(f"backtest.start: {span} reaches into the training/validation data of model "
                      f"{scope.model_id} (in-sample up to {scope.in_sample_end or '?'}); its holdout starts "
                      f"{scope.oos_start}: use --start {scope.oos_start} (the default without --start), or "
                      f"--allow-in-sample to run it with every figure labelled in-sample")


def session_returns(equity: pd.DataFrame, start_cash: float) -> pd.Series:
    """Daily returns of the session-close values (the first session against the start cash)."""
    return daily_returns(equity["value"].groupby(equity.index.normalize()).last(), start_cash)


def significance_of(result: BacktestResult, runs: dict, start_cash: float, reps: int = 2000,
                    seed: int = 0) -> dict:
    """``mltrade.significance.significance`` of the strategy's daily returns against each baseline's."""
    from mltrade.report import baseline_label
    from mltrade.significance import significance

    from mltrade.evidence import qualify_words

    strat = session_returns(result.equity, start_cash)
    base = {k: session_returns(r.equity, start_cash).reindex(strat.index) for k, r in runs.items()}
    base = {k: v.fillna(0.0) for k, v in base.items()}
    labels = {k: baseline_label(k) for k in base}
    sig = significance(strat, base, reps=reps, seed=seed, labels=labels,
                       periods=result.summary.get("periods_per_year", 252))
    sig["words"] = qualify_words(sig, result.summary.get("evidence", ""), labels)
    return sig


def run_backtest(cfg: dict, run_name: Optional[str] = None, progress: bool = False, report: bool = True,
                 extra_params: Optional[dict] = None, start_at_holdout: bool = False,
                 allow_in_sample: bool = True, train_missing: bool = False, engine: str = "auto",
                 significance_reps: int = 2000, log: Callable[[str], None] = print) -> BacktestResult:
    """Run the configured strategy (plus baselines) and write the report into ``<out>/<run_name>/``.

    ML strategies (``dqn``, ``ncp``): ``start_at_holdout`` starts at the model's holdout (logged); a
    range reaching into its training/validation data raises unless ``allow_in_sample`` (the CLI's
    default is to refuse; either way an in-sample run says so in every figure and
    ``summary["out_of_sample"]``); ``train_missing`` trains the default model when there is none.
    """
    name = cfg["strategy"]["name"]
    cls = get_strategy(name)
    kwargs = strategy_kwargs(cls, cfg, extra_params)
    params = {**strategy_params(cls), **kwargs}
    scope = model_scope(name, params)
    if scope.missing and train_missing:
        train_default_model(scope, params, cfg, progress, log)
        scope = model_scope(name, params)
    bt_cfg = cfg["backtest"]
    if scope.has_model and start_at_holdout and scope.oos_start:
        cfg = {**cfg, "backtest": dict(cfg["backtest"], start=scope.oos_start)}   # the caller's stays
        bt_cfg = cfg["backtest"]
        log(f"model {scope.model_id}: out-of-sample from its holdout start {scope.oos_start}")
    for key in ("start", "end"):
        _date_of(bt_cfg.get(key) or None, f"backtest.{key}")
    oos = check_range(scope, bt_cfg.get("start") or None, bt_cfg.get("end") or None, allow_in_sample)
    if not oos and name == "dqn" and "oos_only" not in kwargs:
        kwargs["oos_only"] = False      # labelled in-sample: trade the sessions the user asked for
    bars = load_bars(cfg)
    result = run_strategy(bars, cls, kwargs, cfg, progress, name)
    if hasattr(result.strategy, "summary_extra"):      # e.g. the NCP's learner ladder and figure check
        result.summary.update(result.strategy.summary_extra())
    synthetic = bool(bars.attrs.get("synthetic_intraday", False))
    result.summary.update(strategy=name, data=str(cfg["backtest"]["data"]), synthetic_intraday=synthetic,
                          data_source=bars.attrs.get("source", ""), params={k: v for k, v in kwargs.items()
                                                                             if k != "overlay"})
    result.summary.update(out_of_sample=oos if scope.has_model else None, **scope.to_dict())
    from mltrade.evidence import classify
    result.summary.update(classify(bars, result.trades, getattr(cls, "decision_data", "intraday"),
                                   unwind=str(params.get("unwind", "worst"))))
    if scope.model_id and "model_id" in result.trades.columns:
        result.trades["model_id"] = result.trades["model_id"].fillna(scope.model_id)
    overlay = kwargs.get("overlay")
    if overlay is not None and hasattr(overlay, "summary"):
        result.summary["llm"] = overlay.summary(strategy=result.strategy)
        if hasattr(overlay, "summary_line"):  # per-review lines are DEBUG: one line sums the run up
            logging.getLogger("mltrade.llm").info(overlay.summary_line())
    if hasattr(result.strategy, "summary_extras"):      # e.g. the DQN's training ladder and reconciliation
        result.summary.update(result.strategy.summary_extras())
    if cfg["backtest"]["baselines"]:
        result.baseline_results = baseline_results(bars, cls, kwargs, cfg, progress, scope, engine,
                                                   getattr(result.strategy, "baseline_distances", None))
        result.baselines = {k: r.summary for k, r in result.baseline_results.items()}
        result.summary["significance"] = significance_of(result, result.baseline_results,
                                                         float(cfg["backtest"]["cash"]), significance_reps)
    if report:
        run_name = run_name or f"{name.replace(':', '.')}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
        result.run_dir = Path(cfg["backtest"]["out"]) / run_name
        from mltrade.report import write_report
        sections, figures = _extras(result.strategy)
        write_report(result.run_dir, result.summary, result.trades, result.equity, sections, figures,
                     baselines=result.baselines or None,
                     baseline_equity={k: r.equity for k, r in result.baseline_results.items()} or None,
                     baseline_trades={k: r.trades for k, r in result.baseline_results.items()} or None)
    return result
