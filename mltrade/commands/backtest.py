"""``mltrade backtest`` and ``mltrade report``."""
from __future__ import annotations

import json

from mltrade.strategies.registry import strategy_names


def register(sub) -> None:
    p = sub.add_parser("backtest", help="run a strategy on the sample data or a CSV file and write a report",
                       description="Run a backtest and write report.html, summary.json and trades.csv "
                                   "into <out>/<run>/. Defaults: the momentum reference strategy on the "
                                   "embedded sample data (see mltrade/default_config.toml).")
    p.add_argument("--strategy", help=f"strategy name: {', '.join(strategy_names())} (`mltrade strategies`), "
                                      f"or package.module:Class for any backtrader strategy on PYTHONPATH")
    p.add_argument("--data", help="'sample', a CSV file with datetime,open,high,low,close[,volume], or "
                                  "'twelvedata:SYMBOL' (bars cached by `mltrade data fetch`)")
    p.add_argument("--start", help="first session (YYYY-MM-DD); dqn/ncp: default the model's holdout start")
    p.add_argument("--end", help="last session (YYYY-MM-DD)")
    p.add_argument("--out", help="report folder (default ./reports)")
    p.add_argument("--name", help="run name (default <strategy>-<timestamp>)")
    p.add_argument("--config", help="TOML config file (see mltrade/default_config.toml)")
    p.add_argument("--no-baselines", action="store_true", help="skip the baseline runs")
    p.add_argument("--llm", action="store_true", help="pass decisions through the LLM overlay ([llm] config)")
    p.add_argument("--allow-in-sample", action="store_true",
                   help="dqn/ncp: allow a range that reaches into the model's training/validation data "
                        "(every figure is then labelled in-sample)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_backtest)
    r = sub.add_parser("report", help="rebuild report.html of a run folder from its files")
    r.add_argument("run_dir", help="a folder written by `mltrade backtest`")
    r.set_defaults(func=_report)


def _overrides(args) -> dict:
    o: dict = {}
    bt = {k: getattr(args, k) for k in ("data", "start", "end", "out") if getattr(args, k) is not None}
    if args.no_baselines:
        bt["baselines"] = False
    if bt:
        o["backtest"] = bt
    if args.strategy:
        o["strategy"] = {"name": args.strategy}
    return o


def _backtest(args) -> int:
    from mltrade.backtest import run_backtest
    from mltrade.config import load_config
    from mltrade.settings import BacktestSettings, settings_of

    cfg = load_config(args.config, _overrides(args))
    extra = {}
    if args.llm or cfg.get("llm", {}).get("enabled", False):
        from mltrade.llm import build_overlay
        extra["overlay"] = build_overlay(cfg)
        extra["context_candles"] = int(cfg["llm"]["candles"])
    defaults, run = BacktestSettings(), settings_of(cfg).backtest
    start_at_holdout = args.start is None and run.start == defaults.start
    if str(run.data) != "sample":
        # the packaged 2014-2018 range is the sample's: other data default to their own range
        for key in ("start", "end"):
            if getattr(args, key) is None and getattr(run, key) == getattr(defaults, key):
                cfg["backtest"][key] = ""
    res = run_backtest(cfg, run_name=args.name, progress=not args.quiet, extra_params=extra,
                       start_at_holdout=start_at_holdout, allow_in_sample=args.allow_in_sample,
                       train_missing=True)
    s = res.summary
    tag = {True: " (out of sample)", False: " (IN-SAMPLE)"}.get(s.get("out_of_sample"), "")
    print(f"strategy {s['strategy']}{tag}: {s['trades']} trades, total return {s['total_return']:+.2%}, "
          f"max drawdown {s['max_drawdown']:.2%}, knock-outs {s['knockouts']}, stops {s['stops']}")
    if s.get("significance", {}).get("words"):
        print(f"  {s['significance']['words']}")
    if s.get("evidence"):
        print(f"  evidence: {s['evidence']} ({s.get('evidence_reason', '')})")
    if s.get("synthetic_intraday"):
        print("  note: sample data — real daily NASDAQ bars, synthetic 5-minute bars")
    from mltrade.baselines.names import baseline_label
    for name, b in res.baselines.items():
        print(f"  baseline {baseline_label(name)}: total return {b['total_return']:+.2%}")
    print(f"report: {res.run_dir / 'report.html'}")
    return 0


def _report(args) -> int:
    from mltrade.report import rebuild

    path = rebuild(args.run_dir)
    print(f"report: {path}")
    return 0
