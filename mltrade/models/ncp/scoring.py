"""Strategy performance of predictions: directions, per-session certificate returns, objectives,
baselines on the same sessions, constant-output checks and the holdout's significance."""
from __future__ import annotations

import math
from typing import Dict, Optional

import numpy as np

from mltrade.models.ncp.dataset import NCPDataset
from mltrade.models.ncp.settings import OBJECTIVES


def directions(prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """+1 where P(long) >= threshold, -1 where P(long) <= 1-threshold (strictly below 0.5 at 0.5), else 0."""
    p = np.asarray(prob, float)
    long_ = p >= threshold
    short = (p < 0.5) if threshold == 0.5 else (p <= 1 - threshold)
    return np.where(long_, 1, np.where(short, -1, 0))


def trade_returns(direction: np.ndarray, ds: NCPDataset) -> np.ndarray:
    """Per-session certificate return of the chosen direction (0 where no trade)."""
    d = np.asarray(direction)
    return np.where(d > 0, ds.long_return, np.where(d < 0, ds.short_return, 0.0))


def score(returns: np.ndarray, objective: str = "product", traded: Optional[np.ndarray] = None) -> float:
    """``product``: log of the product of per-trade exit/entry ratios; ``sharpe``: annualised mean/std."""
    r = np.asarray(returns, float)
    if traded is not None:
        r_tr = r[np.asarray(traded, bool)]
    else:
        r_tr = r
    if objective == "product":
        return float(np.log(np.maximum(1.0 + r_tr, 1e-9)).sum())
    if objective == "sharpe":
        sd = r.std()
        return float(r.mean() / r.std(ddof=1) * math.sqrt(252)) if sd > 0 and len(r) > 1 else 0.0  # ddof 1 (one convention)
    raise ValueError(f"objective: expected one of {OBJECTIVES}, got {objective!r}")


def performance(direction: np.ndarray, ds: NCPDataset, objective: str) -> dict:
    """Figures of one set of directions over ``ds``'s sessions."""
    d = np.asarray(direction)
    r = trade_returns(d, ds)
    traded = d != 0
    hits = (r > 0)[traded]
    return {"objective": score(r, objective, traded), "log_product": score(r, "product", traded),
            "sharpe": score(r, "sharpe"), "trades": int(traded.sum()), "sessions": int(len(d)),
            "hit_rate": float(hits.mean()) if len(hits) else float("nan"),
            "mean_return": float(r[traded].mean()) if traded.any() else 0.0,
            "direction_accuracy": float((np.sign(d[traded]) == np.where(ds.label[traded] > 0, 1, -1)).mean())
            if traded.any() else float("nan")}


def baselines(ds: NCPDataset, objective: str, seed: int = 7, draws: int = 200) -> Dict[str, dict]:
    """Always-long, always-short, random direction (mean of ``draws``), buy-and-hold: same sessions."""
    out = {"always_long": performance(np.ones(len(ds), int), ds, objective),
           "always_short": performance(-np.ones(len(ds), int), ds, objective)}
    rng = np.random.default_rng(seed)
    runs = [performance(rng.choice([-1, 1], len(ds)), ds, objective) for _ in range(draws)]
    out["random_direction"] = {k: float(np.nanmean([r[k] for r in runs])) for k in runs[0]}
    # buy-and-hold of the index over the range: first decision price to last decision price
    if len(ds) > 1:
        bh = ds.price[-1] / ds.price[0] - 1.0
        out["buy_and_hold_index"] = {"objective": float(np.log1p(bh)), "log_product": float(np.log1p(bh)),
                                     "sharpe": float("nan"), "trades": 1, "sessions": int(len(ds)),
                                     "hit_rate": float(bh > 0), "mean_return": float(bh),
                                     "direction_accuracy": float("nan")}
    return out


def constant_output(direction: np.ndarray, prob: np.ndarray) -> Optional[str]:
    """``"long"``, ``"short"`` or ``"none"`` (never trades) when every session gets the same direction,
    ``"constant probability"`` when the probabilities don't vary; else None."""
    d = np.asarray(direction)
    if len(d) == 0:
        return None
    p = np.asarray(prob, float)
    if len(p) > 1 and float(p.max() - p.min()) < 1e-6:
        return "constant probability"
    if (d == d[0]).all():
        return {1: "long", -1: "short", 0: "none"}[int(d[0])]
    return None


def describe_constant(reason: Optional[str], where: str) -> str:
    """Words for :func:`constant_output`'s result ("" when the output varies)."""
    if not reason:
        return ""
    if reason in ("long", "short"):
        return f"always {reason} on {where}"
    if reason == "none":
        return f"never trades on {where}"
    return f"{reason} on {where}"


def holdout_significance(returns: np.ndarray, test: NCPDataset) -> Optional[dict]:
    """Bootstrap intervals of the holdout Sharpe and return, Hansen's SPA p against buy-and-hold of the
    index (decision price to decision price) and always-long on the same sessions
    (:func:`mltrade.significance.significance`); None when that module is absent."""
    try:
        from mltrade.significance import significance
    except ImportError:
        return None
    bh = np.concatenate([[0.0], test.price[1:] / test.price[:-1] - 1.0]) if len(test) else np.zeros(0)
    return significance(np.asarray(returns, float), {"buy_and_hold_index": bh,
                                                    "always_long": np.asarray(test.long_return, float)})
