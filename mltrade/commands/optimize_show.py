"""``mltrade optimize show STUDY [--trial N]``: a stored sweep's verdict and best trials, or one trial."""
from __future__ import annotations

import json
import math
from pathlib import Path


def register(sub) -> None:
    from mltrade.cli import subcommand_group

    group = subcommand_group(sub, "optimize", "search a strategy's hyper-parameters (walk-forward)")
    p = group.add_parser("show", help="print a stored study: its verdict and best trials, or one trial",
                         description="Read a study written by `mltrade optimize strategy` (from --storage, or "
                                     "<out>/<STUDY>/study.db) and print its significance verdict, trial counts "
                                     "and the best trials with their validation folds and rounded parameters; "
                                     "--trial N prints that trial in full (state, value, every fold, every "
                                     "parameter unrounded). Changes nothing.")
    p.add_argument("study", metavar="STUDY", help="study name (as printed by `mltrade optimize strategy`)")
    p.add_argument("--trial", type=int, help="trial number to print in full (0 and up)")
    p.add_argument("--top", type=int, default=10, help="best trials listed (default 10)")
    p.add_argument("--storage", help="Optuna RDB URL (default: SQLite file <out>/<STUDY>/study.db)")
    p.add_argument("--out", help="sweep output folder (default [sweep] out)")
    p.add_argument("--config", help="TOML config file")
    p.set_defaults(func=run)


def _num(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}" if math.isfinite(v) else str(v)
    return str(v)


def run(args) -> int:
    import optuna

    from mltrade.config import load_config
    from mltrade.settings import from_table
    from mltrade.sweep.settings import SweepSettings
    from mltrade.sweep.study import create_study
    from mltrade.sweep.trials import fold_values, worker_of
    from mltrade.sweep.verdict import rounded

    cfg = load_config(args.config)
    out = args.out or from_table(SweepSettings, cfg.get("sweep"), "sweep").out
    settings = SweepSettings(study=args.study, out=out, storage=args.storage or "")
    folder = Path(out) / args.study
    if not args.storage and not (folder / "study.db").is_file():
        raise ValueError(f"study {args.study!r}: no {folder / 'study.db'}; give --out of the sweep or --storage URL")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = create_study(settings, load_only=True)
    except KeyError:
        raise ValueError(f"study {args.study!r}: not in {settings.storage_url()}") from None
    trials = study.get_trials(deepcopy=False)
    if args.trial is not None:
        match = [t for t in trials if t.number == args.trial]
        if not match:
            raise ValueError(f"--trial: study {args.study!r} has trials 0 .. {len(trials) - 1}, got {args.trial}")
        t = match[0]
        print(f"trial {t.number} of study {args.study!r}: {t.state.name}, value {_num(t.value)}, worker {worker_of(t)}")
        for k, v in fold_values(t).items():
            print(f"  {k}: {_num(v)}")
        for k, v in t.params.items():
            print(f"  param {k} = {v!r}")
        return 0
    done = sorted((t for t in trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.value,
                  reverse=True)
    states = {}
    for t in trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    print(f"study {args.study!r}: {len(trials):,} trials ({', '.join(f'{n:,} {s}' for s, n in states.items())})")
    sweep = folder / "sweep.json"
    if sweep.is_file():
        s = json.loads(sweep.read_text())
        print(f"verdict: {(s.get('significance') or {}).get('words', 'not computed')}")
        if s.get("pbo") is not None:
            print(f"PBO: {s['pbo']}")
        tb = s.get("test_best") or {}
        print(f"held-out test {'..'.join((s.get('layout') or {}).get('test') or [])}: best trial "
              f"{s.get('best_trial')} total return {tb.get('total_return', 0.0):+.2%} ({tb.get('trades', 0)} trades)")
    print(f"best {min(args.top, len(done))} trials (mean validation log growth; folds):")
    for t in done[:args.top]:
        folds = " ".join(f"{v:+.4f}" for v in fold_values(t).values())
        print(f"  #{t.number}: {t.value:+.5f} [{folds}] {rounded(t.params)}")
    return 0
