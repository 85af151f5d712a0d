"""What a sweep searches: the strategy's declared ``param_space``, one draw from it, and the fixed parameters."""
from __future__ import annotations

from typing import Dict

PRODUCT_KEYS = ("kind", "ratio", "spread", "fx", "barrier_step", "barrier_buffer", "financing_rate",
                "financing_spread", "unwind")


def space_of(cls) -> Dict[str, object]:
    """The strategy's declared parameter space (``param_space`` class attribute)."""
    space = dict(getattr(cls, "param_space", {}) or {})
    if not space:
        raise ValueError(f"strategy: {cls.__name__} declares no param_space to optimise")
    return space


def suggest(trial, space: Dict[str, object]) -> dict:
    """Draw one parameter set from ``space``: (low, high[, step]) ranges or a list of choices."""
    out = {}
    for name, spec in space.items():
        if isinstance(spec, list):
            out[name] = trial.suggest_categorical(name, spec)
        elif isinstance(spec, tuple) and len(spec) in (2, 3):
            low, high = spec[0], spec[1]
            step = spec[2] if len(spec) == 3 else None
            if all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high, step or 1)):
                out[name] = trial.suggest_int(name, low, high, step=step or 1)
            else:
                out[name] = trial.suggest_float(name, float(low), float(high), step=step)
        else:
            raise ValueError(f"param_space[{name}]: expected (low, high[, step]) or a list of choices, got {spec!r}")
    return out


def base_params(cfg: dict, cls) -> dict:
    """Fixed parameters of every trial: [product], [broker] fees, [backtest] cash, [strategy.params]."""
    from mltrade.strategies.registry import strategy_params

    valid = strategy_params(cls)
    out = {k: v for k, v in cfg.get("product", {}).items() if k in PRODUCT_KEYS and k in valid}
    out.update(cfg["strategy"].get("params", {}))
    out["cash"] = float(cfg["backtest"]["cash"])
    out["commission_fixed"] = float(cfg["broker"]["commission_fixed"])
    out["commission_pct"] = float(cfg["broker"]["commission_pct"])
    return out
