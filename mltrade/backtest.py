"""Run a backtest from a configuration: data → feed → strategy → KnockoutBroker → analyzers → report."""
from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path
from typing import Callable, Optional

import pandas as pd

from mltrade.analyzers import daily_returns
from mltrade.baselines.names import baseline_label
# baseline_results / baseline_runs, bars_for / load_bars, BacktestResult / run_strategy / strategy_kwargs:
# kept importable from here for mltrade.sweep.study, mltrade.live.scheduler and mltrade.models.ncp.data
# until their imports name mltrade.baselines.runs, mltrade.feeds.source and mltrade.strategy_run
from mltrade.baselines.runs import baseline_results, baseline_runs  # noqa: F401
from mltrade.config import ConfigError
from mltrade.feeds.source import bars_for, date_of, load_bars  # noqa: F401
from mltrade.settings import settings_of
from mltrade.strategies.base import KnockoutStrategy
from mltrade.strategies.model_info import ModelScope, model_scope
from mltrade.strategies.registry import get_strategy, strategy_params
from mltrade.strategy_run import BacktestResult, run_strategy, strategy_kwargs  # noqa: F401


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
    name = settings_of(cfg).strategy.name
    cls = get_strategy(name)
    kwargs = strategy_kwargs(cls, cfg, extra_params)
    params = {**strategy_params(cls), **kwargs}
    scope = model_scope(name, params)
    if scope.missing and train_missing:
        train_default_model(scope, params, cfg, progress, log)
        scope = model_scope(name, params)
    cfg = _run_range(cfg, scope, start_at_holdout, log)
    run = settings_of(cfg).backtest
    oos = check_range(scope, run.start or None, run.end or None, allow_in_sample)
    if not oos and name == "dqn" and "oos_only" not in kwargs:
        kwargs["oos_only"] = False      # labelled in-sample: trade the sessions the user asked for
    bars = load_bars(cfg)
    result = run_strategy(bars, cls, kwargs, cfg, progress, name)
    _describe(result, bars, cfg, cls, kwargs, params, scope, oos)
    if run.baselines:
        result.baseline_results = baseline_results(bars, cls, kwargs, cfg, progress, scope, engine,
                                                   getattr(result.strategy, "baseline_distances", None))
        result.baselines = {k: r.summary for k, r in result.baseline_results.items()}
        result.summary["significance"] = significance_of(result, result.baseline_results,
                                                         float(run.cash), significance_reps)
    if report:
        _write(result, cfg, run_name or f"{name.replace(':', '.')}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    return result


def _run_range(cfg: dict, scope: ModelScope, start_at_holdout: bool, log: Callable[[str], None]) -> dict:
    """``cfg`` starting at the model's holdout when asked (a copy: the caller's stays); its dates checked."""
    if scope.has_model and start_at_holdout and scope.oos_start:
        cfg = {**cfg, "backtest": dict(cfg["backtest"], start=scope.oos_start)}
        log(f"model {scope.model_id}: out-of-sample from its holdout start {scope.oos_start}")
    run = settings_of(cfg).backtest
    for key in ("start", "end"):
        date_of(getattr(run, key) or None, f"backtest.{key}")
    return cfg


def _describe(result: BacktestResult, bars: pd.DataFrame, cfg: dict, cls: type, kwargs: dict, params: dict,
              scope: ModelScope, oos: bool) -> None:
    """Add to the run's summary what it ran on and may be taken as: the strategy's own figures, the data,
    the model's scope, the evidence, the LLM overlay's review (and the model id on its trades)."""
    s = settings_of(cfg)
    name = s.strategy.name
    if hasattr(result.strategy, "summary_extra"):      # e.g. the NCP's learner ladder and figure check
        result.summary.update(result.strategy.summary_extra())
    synthetic = bool(bars.attrs.get("synthetic_intraday", False))
    result.summary.update(strategy=name, data=str(s.backtest.data), synthetic_intraday=synthetic,
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


def _write(result: BacktestResult, cfg: dict, run_name: str) -> None:
    """The report of the run (and its baselines) into ``<[backtest] out>/<run_name>/``."""
    result.run_dir = Path(settings_of(cfg).backtest.out) / run_name
    from mltrade.report import write_report
    sections, figures = _extras(result.strategy)
    write_report(result.run_dir, result.summary, result.trades, result.equity, sections, figures,
                 baselines=result.baselines or None,
                 baseline_equity={k: r.equity for k, r in result.baseline_results.items()} or None,
                 baseline_trades={k: r.trades for k, r in result.baseline_results.items()} or None)
