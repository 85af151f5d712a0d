"""``mltrade optimize ncp``: walk-forward Optuna search of the NCP/LTC model (resumable SQLite study)."""
from __future__ import annotations


def register(sub) -> None:
    """Add ``optimize ncp`` to the shared ``optimize`` group."""
    from mltrade.cli import subcommand_group
    from mltrade.commands.train_ncp import add_common_arguments

    group = subcommand_group(sub, "optimize", "search a strategy's hyper-parameters (walk-forward)")
    p = group.add_parser("ncp", help="Optuna search over the NCP model (walk-forward validation objective)",
                         description="Each trial trains one model per walk-forward fold (early stopping on "
                                     "the fold's validation range) and is scored by the knock-out strategy on "
                                     "the fold's scored range; bad trials are pruned. The study lives in SQLite "
                                     "under the state dir by default and resumes when run again. The best "
                                     "parameters are then trained once more, tested once on the holdout and "
                                     "offered to the registry. Config: [ncp] in mltrade/config.d/ncp.toml.")
    add_common_arguments(p)
    p.add_argument("--trials", type=int, help="trials to run now (default [ncp] trials)")
    p.add_argument("--study", help="study name (default [ncp] study)")
    p.add_argument("--timeout", type=float, help="stop starting new trials after this many seconds")
    p.set_defaults(func=run)


def run(args) -> int:
    """Search, train the best parameters, print the holdout figures beside the baselines."""
    import dataclasses
    import time

    from mltrade.commands.train_ncp import report_result, settings_from_args
    from mltrade.models.ncp.train import optimize

    s = settings_from_args(args)
    if args.study:
        s = dataclasses.replace(s, study=args.study)
    if args.trials is not None and args.trials < 1:
        raise ValueError(f"--trials: expected a positive integer, got {args.trials}")
    t0 = time.time()
    study, res = optimize(s, n_trials=args.trials, timeout=args.timeout)
    print(f"study {s.study!r}: {len(study.trials)} trials in storage {s.storage_url()} "
          f"({time.time() - t0:.0f} s this run)")
    report_result(res, s)
    return 0
