"""``mltrade strategies``: the registered strategies, their classes and parameters."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("strategies", help="list the registered strategies with their classes and parameters",
                       description="List every strategy `mltrade backtest --strategy NAME` accepts, with its "
                                   "class and parameters (defaults). Any backtrader strategy also runs as "
                                   "--strategy package.module:Class; give such paths here to list them too.")
    p.add_argument("paths", nargs="*", metavar="MODULE:CLASS", help="also show these strategy classes")
    p.set_defaults(func=_strategies)


def _strategies(args) -> int:
    from mltrade.strategies.registry import get_strategy, registered, strategy_params

    rows = registered()
    for path in args.paths:
        cls = get_strategy(path)
        rows.append((path, f"{cls.__module__}:{cls.__qualname__}", strategy_params(cls)))
    for name, where, params in rows:
        print(f"{name}  ({where})")
        for key, value in params.items():
            print(f"    {key} = {value!r}")
    return 0
