"""``mltrade optimize ncp``: walk-forward Optuna search of the NCP/LTC model (resumable SQLite study)."""
from __future__ import annotations


def register(sub) -> None:
    """Add ``optimize ncp`` to the shared ``optimize`` group."""
    from mltrade.cli import subcommand_group
    from mltrade.commands.train_ncp import add_common_arguments

    group = subcommand_group(sub, "optimize", "search a strategy's hyper-parameters (walk-forward)")
    p = group.add_parser("ncp", help="Optuna search over the NCP model (walk-forward validation objective)",
                         description="Each trial trains one model per walk-forward fold (early stopping on "
                                     "the fold's validation range) and is scored by the knock-out strategy "
                                     "on the fold's scored range; weak trials are pruned after the first "
                                     "fold; the best non-degenerate trial on these validation folds is "
                                     "chosen. Workers (--jobs here, or several machines on one --storage) "
                                     "each have their own identity and sampler seed and share this "
                                     "machine's dataset cache. The study lives in SQLite under the state "
                                     "dir by default and resumes when run again. The best parameters are "
                                     "then trained once more, scored once on the holdout (reported, never "
                                     "used to choose) and offered to the registry. "
                                     "Config: [ncp] in mltrade/config.d/ncp.toml.")
    add_common_arguments(p)
    p.add_argument("--trials", type=int, help="trials to run now (default [ncp] trials)")
    p.add_argument("--study", help="study name (default [ncp] study)")
    p.add_argument("--timeout", type=float, help="stop starting new trials after this many seconds")
    p.add_argument("--jobs", type=int, help="search worker processes on this machine (default [ncp] jobs; "
                                            "0 = one per CPU core)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Search, train the best parameters, print the holdout figures beside the baselines."""
    import dataclasses
    import time

    from mltrade.commands.train_ncp import report_result, settings_from_args
    from mltrade.models.ncp.fit import configure_tensorflow
    from mltrade.models.ncp.search import optimize

    s = settings_from_args(args)
    if args.study:
        s = dataclasses.replace(s, study=args.study)
    if args.trials is not None and args.trials < 1:
        raise ValueError(f"--trials: expected a positive integer, got {args.trials}")
    if args.jobs is not None:
        if args.jobs < 0:
            raise ValueError(f"--jobs: expected an integer >= 0, got {args.jobs}")
        s = dataclasses.replace(s, jobs=args.jobs)
    t0 = time.time()
    print(f"device: {configure_tensorflow(s.threads)}")
    study, res = optimize(s, n_trials=args.trials, timeout=args.timeout)
    print(f"study {s.study!r}: {len(study.trials)} trials in storage {s.storage_url()} "
          f"({time.time() - t0:.0f} s this run)")
    report_result(res, s)
    return 0
