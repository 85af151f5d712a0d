"""``mltrade optimize strategy``: Optuna sweep over a strategy's declared parameter space."""
from __future__ import annotations

import dataclasses
import sys


def register(sub) -> None:
    """Add ``optimize strategy`` to the shared ``optimize`` group."""
    from mltrade.cli import subcommand_group

    group = subcommand_group(sub, "optimize", "search a strategy's hyper-parameters (walk-forward)")
    p = group.add_parser("strategy", help="Optuna sweep over a strategy's param_space (vectorised evaluator)",
                         description="Each trial is scored on walk-forward validation folds (pruned fold by "
                                     "fold); the last sessions are held out and only the best and the default "
                                     "parameters are run on them, through the KnockoutBroker. Resumable: the "
                                     "study lives in --storage (SQLite by default, any Optuna RDB URL, e.g. "
                                     "PostgreSQL shared by workers on several machines). Writes report.html, "
                                     "trials.csv and best_config.toml (for `mltrade backtest --config`) into "
                                     "<out>/<study>/. Defaults: [sweep] in mltrade/config.d/sweep.toml.")
    p.add_argument("--strategy", help="strategy name (default [strategy] name)")
    p.add_argument("--trials", type=int, help="trials to run now")
    p.add_argument("--jobs", type=int, help="worker processes on this machine")
    p.add_argument("--storage", help="Optuna RDB URL (sqlite:///file.db, postgresql://user:pw@host/db)")
    p.add_argument("--study", help="study name")
    p.add_argument("--engine", choices=["vector", "broker"], help="how every trial is scored: vector (the numpy evaluator, fast; the broker re-runs the "
                        "best trial) or broker (every trial through backtrader and the KnockoutBroker: slow, "
                        "exact; the broker re-runs the top [sweep] top trials)")
    p.add_argument("--data", help="'sample', a CSV file or 'twelvedata:SYMBOL' (as `mltrade backtest --data`)")
    p.add_argument("--start", help="first session (YYYY-MM-DD; default [sweep] start, else [backtest] start)")
    p.add_argument("--end", help="last session (YYYY-MM-DD; default [sweep] end, else [backtest] end)")
    p.add_argument("--folds", type=int, help="walk-forward validation folds")
    p.add_argument("--batch", type=int, help="trials scored per vectorised evaluation")
    p.add_argument("--out", help="output folder (the study's report goes into <out>/<study>/)")
    p.add_argument("--config", help="TOML config file (product, broker, strategy and [sweep] settings)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def settings_from(cfg: dict, args) -> "SweepSettings":
    """[sweep] settings overridden by the command-line flags."""
    from mltrade.settings import BacktestSettings, from_table, settings_of
    from mltrade.sweep.settings import SweepSettings

    s = dataclasses.asdict(from_table(SweepSettings, cfg.get("sweep"), "sweep"))
    typed = settings_of(cfg)
    s["strategy"] = typed.strategy.name
    packaged = BacktestSettings()
    for k in ("start", "end"):   # one default range: the backtest's (the sample's 2014-2018; other data: all of it)
        if not s.get(k):
            v = getattr(typed.backtest, k)
            s[k] = "" if str(typed.backtest.data) != "sample" and v == getattr(packaged, k) else v
    for k in ("strategy", "trials", "jobs", "storage", "study", "engine", "start", "end", "folds", "batch", "out"):
        v = getattr(args, k, None)
        if v is not None:
            s[k] = v
    s["progress"] = not args.quiet
    fields = {f.name for f in dataclasses.fields(SweepSettings)}
    return SweepSettings(**{k: v for k, v in s.items() if k in fields})


def run(args) -> int:
    """Run or resume the sweep and print the best parameters beside the defaults on the held-out test."""
    from mltrade.config import load_config
    from mltrade.sweep.study import optimize

    over = {"strategy": {"name": args.strategy}} if args.strategy else {}
    if getattr(args, "data", None):
        over["backtest"] = {"data": args.data}
    cfg = load_config(args.config, over or None)
    settings = settings_from(cfg, args)
    s = optimize(cfg, settings)
    print(f"study {s['study']!r} ({s['storage']}): {s['trials_new']} new trials in {s['search_seconds']:.1f} s, "
          f"{s['trials_total']} in total ({s['trials_pruned']} pruned)")
    for w in s.get("failed_workers", []):
        print(f"warning: worker {w['worker']} died (exit code {w['exitcode']}); its batch in flight is lost, "
              f"the other workers' trials and this report stand", file=sys.stderr)
    from mltrade.baselines.names import baseline_label
    from mltrade.sweep.verdict import rounded
    print(f"best trial {s['best_trial']}: {rounded(s['best_params'])} (mean validation log growth "
          f"{s['best_value']:.5f}; exact values in best_config.toml)")
    print(f"significance: {s['significance']['words']}")
    for c in s["confirmation"]:
        sv = "n/a" if c["search_value"] is None else f"{c['search_value']:.6f}"
        print(f"  broker confirmation of trial {c['trial']}: validation objective {sv} "
              f"({c['search_engine']}) "
              f"vs broker {c['broker_value']:.6f}")
    tb, td = s["test_best"], s["test_default"]
    print(f"held-out test {'..'.join(s['layout']['test'])}: best params total return {tb['total_return']:+.2%} "
          f"({tb['trades']} trades), default params {td['total_return']:+.2%}")
    for name, b in s.get("test_baselines", {}).items():
        print(f"  baseline {baseline_label(name)} on the test range: total return {b['total_return']:+.2%}")
    if s["test_vector"]:
        print(f"  evaluator on the test range: final cash {s['test_vector']['best_final_cash']:.2f} "
              f"vs broker {tb['final_value']:.2f}")
    if s.get("synthetic_intraday"):
        print("  note: sample data — real daily NASDAQ bars, synthetic 5-minute bars")
    out = settings.out_dir()
    print(f"report: {out / 'report.html'}\nbest config: {out / 'best_config.toml'}")
    return 0
