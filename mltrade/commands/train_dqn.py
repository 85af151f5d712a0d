"""``mltrade train dqn``: walk-forward training of the DQN day/night ensembles into the model registry."""
from __future__ import annotations

import json


def register(sub) -> None:
    """Add ``train dqn`` to the shared ``train`` group."""
    from mltrade.cli import subcommand_group

    group = subcommand_group(sub, "train", "train a strategy's models (walk-forward, out-of-sample)")
    p = group.add_parser("dqn", help="train the DQN ensembles (walk-forward) and keep them if they beat the "
                                     "kept model on validation",
                         description="Chronological folds (train, validation, test with embargo): agents are "
                                     "trained on train, selected and gated on validation, evaluated once on "
                                     "test (the holdout) beside buy-and-hold, always-long and "
                                     "random-direction baselines. The registry keeps a model by its validation return only; a "
                                     "model with constant validation outputs is reported degenerate and not "
                                     "kept. Parameters: [dqn] in mltrade/config.d/dqn.toml; see docs/dqn.md.")
    p.add_argument("--config", help="TOML config file overriding [dqn]")
    p.add_argument("--agents", type=int, help="agents kept per ensemble (default [dqn] agents)")
    p.add_argument("--candidates", type=int, help="agents trained per ensemble before selection")
    p.add_argument("--steps", type=int, help="environment steps per agent")
    p.add_argument("--folds", type=int, help="walk-forward folds")
    p.add_argument("--sessions", help="comma-separated: day,night")
    p.add_argument("--mode", choices=["daily", "intraday"],
                   help="daily (day/night ensembles) or intraday (decide after --n-candles bars)")
    p.add_argument("--n-candles", type=int, help="intraday mode: bars of the session seen before deciding")
    p.add_argument("--data", help="'sample' or a CSV file of bars (default [dqn] data)")
    p.add_argument("--registry", help="model registry folder (default [dqn] registry)")
    p.add_argument("--seed", type=int, help="base seed")
    p.add_argument("--n-envs", type=int, help="environments stepped together per agent (1 = DQNAgent.fit)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    d = p.add_argument_group("training across machines (docs/dqn.md)")
    d.add_argument("--storage", help="Optuna RDB URL (postgresql://... or sqlite:///...): every candidate "
                                     "agent is a job in a shared study; this process takes jobs, waits "
                                     "for the others' and assembles the ensembles")
    d.add_argument("--worker", action="store_true", help="with --storage: take jobs until none is left, then "
                                                        "exit (no assembly); trains from the study's config")
    d.add_argument("--study", help="with --storage: the study's name (default: dqn-<hash of [dqn]>)")
    d.add_argument("--artifacts", help="with --storage: a folder every worker shares for the trained agents "
                                       "(default: stored in the RDB)")
    d.add_argument("--heartbeat", type=int, default=10,
                   help="with --storage: seconds between a worker's heartbeats; a job whose worker misses "
                        "three is taken over (default 10)")
    p.set_defaults(func=run)


def overrides(args) -> dict:
    """``[dqn]`` overrides from the command-line flags."""
    o: dict = {}
    for flag, key in (("agents", "agents"), ("candidates", "candidates"), ("steps", "steps"),
                      ("folds", "n_folds"), ("registry", "registry"), ("data", "data"), ("seed", "seed"), ("mode", "mode"),
                      ("n_candles", "n_candles"), ("n_envs", "n_envs")):
        v = getattr(args, flag, None)
        if v is not None:
            o[key] = v
    if getattr(args, "sessions", None):
        o["sessions"] = [s.strip() for s in args.sessions.split(",") if s.strip()]
    if "agents" in o and "candidates" not in o:
        o["candidates"] = max(o["agents"], int(round(o["agents"] * 1.2)))
    return {"dqn": o} if o else {}


def report_lines(summary: dict) -> list:
    """The CLI's lines for a :func:`train_walk_forward` summary: selection, holdout, degeneracy, registry."""
    lines = []
    sel = summary.get("selection_range") or ["?", "?"]

    def num(x: object, fmt: str) -> str:
        return "n/a" if x is None else format(x, fmt)
    for s in summary.get("sessions", []):
        lines.append(f"{s} ensemble: validation {sel[0]} .. {sel[1]} (chooses) "
                     f"{summary[f'val_return_{s}']:+.2%}; out-of-sample (compounded over test folds, scored "
                     f"once) {summary[f'oos_return_{s}']:+.2%}")
    for s, v in (summary.get("significance") or {}).items():
        ci = v.get("sharpe_ci") or [None, None]
        p = v.get("spa_pvalue") or {}
        lines.append(f"{s} holdout: Sharpe {num(v.get('sharpe'), '+.2f')} (95% interval "
                     f"{num(ci[0], '+.2f')} .. {num(ci[1], '+.2f')}); SPA p vs buy-and-hold "
                     f"{num(p.get('buy_and_hold'), '.3f')}, vs always-long {num(p.get('always_long'), '.3f')}, "
                     f"vs no trade {num(p.get('no_trade'), '.3f')}")
    for s, folds in (summary.get("selection_pbo") or {}).items():
        lines.append(selection_pbo_line(s, folds))
    kept = summary.get("holdout_return_kept") or {}
    if len(summary.get("folds", [])) > len(summary.get("sessions", [])) and kept:
        lines.append("kept model (last fold) over its own holdout " + " .. ".join(summary.get("holdout_range") or [])
                     + ", what `mltrade backtest --strategy dqn` trades: "
                     + ", ".join(f"{s} {v:+.2%}" for s, v in kept.items()))
    from mltrade.models.dqn.ladder import ladder_lines
    for s, lad in (summary.get("ladder") or {}).items():
        lines.extend(ladder_lines(s, lad))
    if summary.get("degenerate"):
        lines.append(f"DEGENERATE model (constant validation outputs): {summary['degenerate_reason']}")
    if summary.get("holdout_constant"):
        lines.append(f"warning: constant on the holdout: {summary['holdout_constant_reason']}")
    if summary.get("below_baselines"):
        lines.append(f"WARNING: no better than its own baselines on validation: {summary['below_baselines_reason']}"
                     + (" (kept all the same: the registry ranks by validation return; the report says so)"
                        if summary.get("kept") else ""))
    if summary.get("kept"):
        verdict = "kept (best validation return so far)"
    elif summary.get("degenerate"):
        verdict = "NOT kept (the registry refuses degenerate models)"
    else:
        verdict = "NOT kept (the kept model did better on the same validation range)"
    where = summary.get("model_dir") or "no model kept yet"
    lines.append(f"model {verdict}: {where}  ({summary['seconds']} s)")
    return lines


def selection_pbo_line(session: str, folds: list) -> str:
    """One line: the PBO of the candidate selection of each fold (or why it is not computable)."""
    parts = []
    for f in folds:
        if f.get("pbo") is None:
            parts.append(f"fold {f.get('fold')}: not computable ({f.get('reason', 'too few trials or sessions')})")
        else:
            parts.append(f"fold {f.get('fold')}: {f['pbo']:.2f} ({f['trials']} candidates, {f['sessions']} sessions)")
    return (f"{session} candidate selection, probability that the chosen candidate is below the median out of "
            f"sample (PBO, CSCV on validation): " + "; ".join(parts))


def run(args) -> int:
    """Train, print validation and out-of-sample figures, degeneracy, and whether the model was kept."""
    from mltrade.config import load_config
    from mltrade.models.dqn.pipeline import train_walk_forward

    for flag in ("worker", "study", "artifacts"):
        if getattr(args, flag, None) and not getattr(args, "storage", None):
            raise ValueError(f"--{flag}: needs --storage URL (training across machines)")
    cfg = load_config(args.config, overrides(args))["dqn"]
    if cfg["candidates"] < cfg["agents"]:
        cfg["candidates"] = cfg["agents"]
    from mltrade.models.dqn.vector import training_device

    print(f"device: {training_device()}", flush=True)
    if getattr(args, "storage", None):
        return run_distributed(args, cfg)
    summary = train_walk_forward(cfg, progress=not args.quiet)
    for line in report_lines(summary):
        print(line)
    return 0


def run_distributed(args, cfg: dict) -> int:
    """``--storage``: take jobs of the shared study; without ``--worker`` also wait for all and assemble."""
    from mltrade.models.dqn.distributed import DistributedTraining

    def log(msg: str) -> None:
        print(msg, flush=True)
    dt = DistributedTraining(args.storage, cfg, study=args.study, artifacts=args.artifacts,
                             heartbeat=args.heartbeat, log=log, check_config=not args.worker)
    log(dt.describe())
    ran = dt.work(wait=not args.worker)
    st = dt.status()
    log(f"{dt.worker}: ran {ran} job(s); study {dt.study_name}: {st['done']}/{st['jobs']} done, "
        f"{st['running']} running, {st['waiting']} waiting, {st['failed']} failed trial(s)")
    if args.worker:
        return 0
    summary = dt.assemble(cfg, progress=not args.quiet)
    log(f"assembled from the {summary['jobs']} agents of study {dt.study_name} "
        "(the same selection as on one machine)")
    for line in report_lines(summary):
        print(line)
    return 0
