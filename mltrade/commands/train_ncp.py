"""``mltrade train ncp``: train the NCP/LTC model (best searched or default parameters), test once."""
from __future__ import annotations

import json


def register(sub) -> None:
    """Add ``train ncp`` to the shared ``train`` group."""
    from mltrade.cli import subcommand_group

    group = subcommand_group(sub, "train", "train a strategy's models (walk-forward, out-of-sample)")
    p = group.add_parser("ncp", help="train the NCP/LTC model; keep it if it beats the kept one on "
                                     "validation",
                         description="Scores the parameters on the walk-forward validation folds "
                                     "(the registry's selection figure), fits the ATR adaptation on those "
                                     "folds' out-of-fold predictions, trains the final model (early stopping "
                                     "on its own window before the holdout), scores the holdout once beside "
                                     "baselines and offers the model to the registry (a degenerate model, "
                                     "constant on validation, is refused). Parameters: the best trial "
                                     "of the [ncp] study if one exists (see `mltrade optimize ncp`), "
                                     "else the defaults. "
                                     "Config: [ncp] in mltrade/config.d/ncp.toml.")
    add_common_arguments(p)
    p.add_argument("--params", help="JSON file or string of model parameters (overrides the study's best)")
    p.add_argument("--defaults", action="store_true", help="ignore the study, use the default parameters")
    p.set_defaults(func=run)


def add_common_arguments(p) -> None:
    """Flags shared by ``train ncp`` and ``optimize ncp``."""
    p.add_argument("--config", help="TOML config file overriding [ncp]/[product]")
    p.add_argument("--data", help="'sample' or a CSV file of intraday bars")
    p.add_argument("--start", help="first session (YYYY-MM-DD)")
    p.add_argument("--end", help="last session (YYYY-MM-DD)")
    p.add_argument("--cell", choices=["ltc", "cfc"], help="recurrent cell (default [ncp] cell)")
    p.add_argument("--objective", choices=["product", "sharpe"], help="objective (default [ncp] objective)")
    p.add_argument("--max-epochs", type=int, help="upper bound of epochs (early stopping on validation)")
    p.add_argument("--state-dir", help="folder of the study database and model registry (default .mltrade)")
    p.add_argument("--storage", help="Optuna storage URL (default sqlite under the state dir)")


def settings_from_args(args):
    """``NCPSettings`` from the config file and the command-line flags."""
    from mltrade.config import load_config
    from mltrade.models.ncp.settings import NCPSettings

    o = {}
    for flag, key in (("data", "data"), ("start", "start"), ("end", "end"), ("cell", "cell"),
                      ("objective", "objective"), ("max_epochs", "max_epochs"), ("state_dir", "state_dir"),
                      ("storage", "storage")):
        v = getattr(args, flag, None)
        if v is not None:
            o[key] = v
    cfg = load_config(args.config, {"ncp": o} if o else None)
    return NCPSettings.from_config(cfg)


def _params(args, s) -> dict:
    from mltrade.models.ncp.fit import DEFAULT_PARAMS
    from mltrade.models.ncp.search import best_params
    if args.params:
        text = args.params
        if not text.lstrip().startswith("{"):
            with open(text) as fh:
                text = fh.read()
        try:
            params = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--params: line {exc.lineno}: malformed JSON ({exc.msg})") from exc
        unknown = sorted(set(params) - set(DEFAULT_PARAMS) - {"cell"})
        if unknown:
            raise ValueError(f"--params: unknown keys {unknown}; valid: {sorted(DEFAULT_PARAMS)}")
        return params
    if not args.defaults:
        best = best_params(s)
        if best:
            print(f"parameters: best trial of study {s.study!r}")
            return best
    print("parameters: defaults")
    return {"epochs": s.max_epochs}


def report_result(res, s) -> None:
    """Print the holdout figures and whether the registry kept the model."""
    from mltrade.models.ncp.artifact import format_metrics
    print(format_metrics(res.metrics))
    ad = res.adaptation
    bins = ", ".join(f"bin {t['bin']} {t['range']}: {t['action']} (n={t['count']})" for t in ad.table)
    print(f"ATR adaptation (out of fold, before the holdout): {bins}")
    if res.kept:
        why = "kept"
    elif res.degenerate:
        why = f"NOT kept (degenerate: {res.metrics['degenerate_reason']})"
    else:
        why = "NOT kept (the kept model did better on its validation folds)"
    verdict = res.metrics.get("ladder", {}).get("verdict", {}).get("words")
    if verdict:
        print(f"verdict: {verdict}")
    if res.kept:
        print(f"model {why}: {res.path}")
        print(f"backtest it with: mltrade backtest --strategy ncp --start {res.metrics['holdout'][0]}")
    else:
        print(f"model {why}; the registry's current model (if any) is unchanged")


def run(args) -> int:
    """Train once with the chosen parameters and offer the model to the registry."""
    from mltrade.models.ncp.data import cached_dataset
    from mltrade.models.ncp.final import train_final
    from mltrade.models.ncp.fit import configure_tensorflow

    s = settings_from_args(args)
    print(f"device: {configure_tensorflow(s.threads)}")
    ds = cached_dataset(s, print)
    res = train_final(_params(args, s), ds, s)
    report_result(res, s)
    return 0
