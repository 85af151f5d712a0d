"""``mltrade train dqn``: walk-forward training of the DQN day/night ensembles into the model registry."""
from __future__ import annotations

import json


def register(sub) -> None:
    """Add ``train dqn`` to the shared ``train`` group."""
    from mltrade.cli import subcommand_group

    group = subcommand_group(sub, "train", "train a strategy's models (walk-forward, out-of-sample)")
    p = group.add_parser("dqn", help="train the DQN ensembles (walk-forward) and keep them if they beat the "
                                     "kept model out of sample",
                         description="Chronological folds (train, validation, test with embargo): agents are "
                                     "trained on train, selected and gated on validation, evaluated once on "
                                     "test beside buy-and-hold, always-long and random-direction baselines. "
                                     "Parameters: [dqn] in mltrade/config.d/dqn.toml.")
    p.add_argument("--config", help="TOML config file overriding [dqn]")
    p.add_argument("--agents", type=int, help="agents kept per ensemble (default [dqn] agents)")
    p.add_argument("--candidates", type=int, help="agents trained per ensemble before selection")
    p.add_argument("--steps", type=int, help="environment steps per agent")
    p.add_argument("--folds", type=int, help="walk-forward folds")
    p.add_argument("--sessions", help="comma-separated: day,night")
    p.add_argument("--mode", choices=["daily", "intraday"],
                   help="daily (day/night ensembles) or intraday (decide after --n-candles bars)")
    p.add_argument("--n-candles", type=int, help="intraday mode: bars of the session seen before deciding")
    p.add_argument("--registry", help="model registry folder (default [dqn] registry)")
    p.add_argument("--seed", type=int, help="base seed")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def overrides(args) -> dict:
    """``[dqn]`` overrides from the command-line flags."""
    o: dict = {}
    for flag, key in (("agents", "agents"), ("candidates", "candidates"), ("steps", "steps"),
                      ("folds", "n_folds"), ("registry", "registry"), ("seed", "seed"), ("mode", "mode"),
                      ("n_candles", "n_candles")):
        v = getattr(args, flag, None)
        if v is not None:
            o[key] = v
    if getattr(args, "sessions", None):
        o["sessions"] = [s.strip() for s in args.sessions.split(",") if s.strip()]
    if "agents" in o and "candidates" not in o:
        o["candidates"] = max(o["agents"], int(round(o["agents"] * 1.2)))
    return {"dqn": o} if o else {}


def run(args) -> int:
    """Train, print the out-of-sample figures beside the baselines, report whether the model was kept."""
    from mltrade.config import load_config
    from mltrade.models.dqn.pipeline import train_walk_forward

    cfg = load_config(args.config, overrides(args))["dqn"]
    if cfg["candidates"] < cfg["agents"]:
        cfg["candidates"] = cfg["agents"]
    summary = train_walk_forward(cfg, progress=not args.quiet)
    for s in summary.get("sessions", cfg["sessions"]):
        print(f"out-of-sample {s} ensemble (compounded over test folds): {summary[f'oos_return_{s}']:+.2%}")
    print(f"model {'kept' if summary['kept'] else 'NOT kept (the kept model did better out of sample)'}: "
          f"{summary['model_dir']}  ({summary['seconds']} s)")
    return 0
