"""Strategies by name, for the CLI, the config file and the sweeps.

A name is one registered with :func:`register_strategy` (the built-in ones: ``momentum``,
``buyhold``, ``dqn``, ``ncp``) or a ``package.module:Class`` path to any backtrader strategy
class importable from ``sys.path`` (plain ``bt.Strategy`` subclasses run on the broker's default
certificate, from ``[product]``).
"""
from __future__ import annotations

import importlib
from typing import Dict, List, Tuple, Type

import backtrader as bt

from mltrade.strategies.base import KnockoutStrategy

_REGISTRY: Dict[str, str | Type[bt.Strategy]] = {
    "momentum": "mltrade.strategies.reference:IntradayMomentum",
    "buyhold": "mltrade.strategies.reference:BuyAndHold",
    "dqn": "mltrade.strategies.dqn:DQNEnsembleStrategy",
    "ncp": "mltrade.strategies.ncp:NCPStrategy",
}


def register_strategy(name: str, cls: str | Type[bt.Strategy]) -> None:
    """Register a strategy class (or ``"module:Class"`` path, imported on first use) under ``name``."""
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"strategy: a registered name is a non-empty word without ':', got {name!r}")
    if not isinstance(cls, str) and not (isinstance(cls, type) and issubclass(cls, bt.Strategy)):
        raise ValueError(f"strategy: {name!r} must be a backtrader Strategy class or 'module:Class', got {cls!r}")
    _REGISTRY[name] = cls


def strategy_names() -> list[str]:
    return sorted(_REGISTRY)


def _load(ref: str, what: str) -> Type[bt.Strategy]:
    module, sep, attr = ref.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"strategy: {what} must look like 'package.module:Class', got {ref!r}")
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except ImportError as exc:
        raise ValueError(f"strategy: {what} {ref!r}: cannot import module {module!r} ({exc}); "
                         f"is its folder on PYTHONPATH?") from exc
    except AttributeError as exc:
        raise ValueError(f"strategy: {what} {ref!r}: module {module!r} has no {attr!r}") from exc
    if not (isinstance(obj, type) and issubclass(obj, bt.Strategy)):
        raise ValueError(f"strategy: {what} {ref!r} is not a backtrader Strategy class (got {obj!r})")
    return obj


def get_strategy(name: str) -> Type[bt.Strategy]:
    """The strategy class registered as ``name``, or the class a ``package.module:Class`` path names."""
    if name not in _REGISTRY:
        if isinstance(name, str) and ":" in name:
            return _load(name, "path")
        raise ValueError(f"strategy: unknown strategy {name!r}; valid: {', '.join(strategy_names())}, "
                         f"or a 'package.module:Class' path to a backtrader strategy")
    ref = _REGISTRY[name]
    if isinstance(ref, str):
        ref = _load(ref, f"{name!r} is registered as")
        _REGISTRY[name] = ref
    return ref


def strategy_params(cls: Type[bt.Strategy]) -> dict:
    """The strategy's parameters and their defaults (backtrader ``params``)."""
    return dict(cls.params._getitems())


def is_plain(cls: Type[bt.Strategy]) -> bool:
    """A backtrader strategy that is not a :class:`KnockoutStrategy` (it orders without ``product=``)."""
    return not issubclass(cls, KnockoutStrategy)


def registered() -> List[Tuple[str, str, dict]]:
    """(name, ``module:Class``, params with defaults) of every registered strategy, imported to read them."""
    out = []
    for name in strategy_names():
        cls = get_strategy(name)
        out.append((name, f"{cls.__module__}:{cls.__qualname__}", strategy_params(cls)))
    return out
