"""Strategies by name, for the CLI, the config file and the sweeps."""
from __future__ import annotations

import importlib
from typing import Dict, Type

from mltrade.strategies.base import KnockoutStrategy

_REGISTRY: Dict[str, str | Type[KnockoutStrategy]] = {
    "momentum": "mltrade.strategies.reference:IntradayMomentum",
    "buyhold": "mltrade.strategies.reference:BuyAndHold",
    "dqn": "mltrade.strategies.dqn:DQNEnsembleStrategy",
    "ncp": "mltrade.strategies.ncp:NCPStrategy",
}


def register_strategy(name: str, cls: str | Type[KnockoutStrategy]) -> None:
    """Register a strategy class (or ``"module:Class"`` path, imported on first use) under ``name``."""
    _REGISTRY[name] = cls


def strategy_names() -> list[str]:
    return sorted(_REGISTRY)


def get_strategy(name: str) -> Type[KnockoutStrategy]:
    """The strategy class registered as ``name``; unknown names list the valid ones."""
    if name not in _REGISTRY:
        raise ValueError(f"strategy: unknown strategy {name!r}; valid: {', '.join(strategy_names())}")
    ref = _REGISTRY[name]
    if isinstance(ref, str):
        module, _, attr = ref.partition(":")
        try:
            ref = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"strategy: {name!r} is registered as {ref!r} but cannot be loaded: {exc}") from exc
        _REGISTRY[name] = ref
    return ref


def strategy_params(cls: Type[KnockoutStrategy]) -> dict:
    """The strategy's parameters and their defaults (backtrader ``params``)."""
    return dict(cls.params._getitems())
