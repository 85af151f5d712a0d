"""The kernel's parameters: names, defaults, and parameter sets normalised to ``(n_sets, 1)`` arrays."""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import numpy as np

#: parameter names with their defaults (strategy params + broker params)
DEFAULTS: Dict[str, object] = {
    "decision_bar": 17, "min_move": 0.0, "distance": 0.04, "stop": 0.71, "stake": np.nan, "stake_fraction": np.nan,
    "kind": "turbo", "ratio": 0.01, "spread": 0.0, "fx": 1.0, "barrier_step": 0.0,
    "barrier_buffer": 0.0, "financing_rate": 0.0, "financing_spread": 0.0, "unwind": "worst",
    "cash": 10_000.0, "commission_fixed": 0.0, "commission_pct": 0.0,
    "direction_rule": "momentum", "seed": 7,
}
#: ``IntradayMomentum.direction_rule`` values; ``param_sets`` turns them into codes (``p["rule"]``)
DIRECTION_RULES = ("momentum", "long", "random")
RULE_MOMENTUM, RULE_LONG, RULE_RANDOM = 0, 1, 2
#: parameters that must be the same for every set of one evaluation
SCALAR_PARAMS = ("barrier_step", "unwind")


def param_sets(sets: Sequence[Mapping] | Mapping[str, object], n: Optional[int] = None) -> Dict[str, np.ndarray]:
    """Normalise parameter sets (a list of dicts, or a dict of scalars/arrays) to ``(n_sets, 1)`` arrays.

    Unknown names are rejected; missing ones take :data:`DEFAULTS`.
    """
    cols, n = _columns(sets, n)
    unknown = set(cols) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"params: unknown parameter(s) {sorted(unknown)}; valid: {', '.join(sorted(DEFAULTS))}")
    out: Dict[str, np.ndarray] = {}
    for name, default in DEFAULTS.items():
        v = cols.get(name, default)
        if name in SCALAR_PARAMS:
            vals = set(np.atleast_1d(np.asarray(v, dtype=object)).tolist())
            if len(vals) != 1:
                raise ValueError(f"params: {name} must be the same for all sets of one evaluation, got {sorted(vals)}")
            out[name] = np.asarray(vals.pop())
        elif name in _CODED:
            key, code = _CODED[name]
            out[key] = code(np.broadcast_to(np.asarray(v, dtype=object), (n,)))
        else:
            arr = np.asarray([np.nan if x is None else x for x in np.broadcast_to(np.asarray(v, dtype=object), (n,))],
                             dtype=float)
            out[name] = arr[:, None]
    _check_ranges(out)
    return out


def _columns(sets: Sequence[Mapping] | Mapping[str, object], n: Optional[int]):
    """``(name -> value or per-set values, number of sets)`` of either form :func:`param_sets` takes."""
    if isinstance(sets, Mapping):
        cols = dict(sets)
        lens = {len(v) for v in cols.values() if isinstance(v, (list, tuple, np.ndarray)) and np.ndim(v) == 1}
        if len(lens) > 1:
            raise ValueError(f"params: array parameters have different lengths {sorted(lens)}")
        return cols, (lens.pop() if lens else (n or 1))
    sets = list(sets)
    if not sets:
        raise ValueError("params: expected at least one parameter set")
    keys = set().union(*[s.keys() for s in sets])
    return {k: [s.get(k, DEFAULTS.get(k)) for s in sets] for k in keys}, len(sets)


def _kind(arr: np.ndarray) -> np.ndarray:
    bad = [k for k in set(arr.tolist()) if k not in ("turbo", "minifuture")]
    if bad:
        raise ValueError(f"params: kind must be 'turbo' or 'minifuture', got {bad}")
    return (arr == "minifuture")[:, None]


def _rule(arr: np.ndarray) -> np.ndarray:
    bad = sorted({str(r) for r in arr.tolist() if r not in DIRECTION_RULES})
    if bad:
        raise ValueError(f"params: direction_rule must be one of {', '.join(DIRECTION_RULES)}, got {bad}")
    return np.asarray([DIRECTION_RULES.index(r) for r in arr.tolist()], dtype=np.int8)[:, None]


def _seed(arr: np.ndarray) -> np.ndarray:
    seeds = []
    for i, x in enumerate(arr.tolist()):
        if isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_)):
            seeds.append(int(x))     # any size: random.Random takes arbitrary integers
        elif isinstance(x, (float, np.floating)) and np.isfinite(x) and float(x).is_integer():
            seeds.append(int(x))
        else:
            raise ValueError(f"params: set {i}: seed = {x!r}, expected an integer (the random "
                             f"direction rule must be reproducible)")
    big = any(abs(x) >= 2 ** 63 for x in seeds)
    return np.asarray(seeds, dtype=object if big else np.int64)[:, None]


#: parameters turned into codes: name -> (key in the normalised sets, coder of the per-set values)
_CODED = {"kind": ("is_mini", _kind), "direction_rule": ("rule", _rule), "seed": ("seed", _seed)}


def _check_ranges(p: Dict[str, np.ndarray]) -> None:
    def bad(name: str, mask: np.ndarray, expected: str) -> None:
        if mask.any():
            i = int(np.flatnonzero(mask.ravel())[0])
            raise ValueError(f"params: set {i}: {name} = {p[name].ravel()[i]!r}, expected {expected}")
    bad("decision_bar", ~(p["decision_bar"] >= 1) | (p["decision_bar"] != np.floor(p["decision_bar"])),
        "an integer >= 1")
    bad("distance", ~((p["distance"] > 0) & (p["distance"] < 1)), "a fraction in (0, 1)")
    bad("stop", ~(np.isnan(p["stop"]) | ((p["stop"] > 0) & (p["stop"] < 1))), "a fraction in (0, 1) or None")
    for name in ("ratio", "fx", "cash"):
        bad(name, ~(p[name] > 0), "a positive number")
    for name in ("spread", "commission_fixed", "commission_pct", "barrier_buffer", "min_move", "financing_spread"):
        bad(name, ~(p[name] >= 0), "a non-negative number")
    bad("stake", ~(np.isnan(p["stake"]) | (p["stake"] > 0)), "a positive amount or None")
    bad("stake_fraction", ~(np.isnan(p["stake_fraction"]) | (p["stake_fraction"] >= 0)),
        "a non-negative fraction or None")
