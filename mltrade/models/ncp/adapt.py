"""ATR-binned direction adaptation: follow, flip or skip the model's direction per early-session ATR bin.

Estimated on training/validation sessions only (never on the test range): the
bin edges are quantiles of the estimation sessions' early ATR, and each bin's
action is the one whose mean log return (follow vs flip) is best, or ``skip``
when both lose. Bins with fewer than ``min_count`` sessions keep ``follow``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

ACTIONS = ("follow", "flip", "skip")


def _logret(r: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(1.0 + np.asarray(r, float), 1e-9))


@dataclass
class ATRAdaptation:
    """Bin edges (interior quantiles of the early ATR) and one action per bin, with the estimation table."""

    edges: List[float]
    actions: List[str]
    table: List[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.actions) != len(self.edges) + 1:
            raise ValueError(f"actions: expected {len(self.edges) + 1} (one per bin), "
                             f"got {len(self.actions)}")
        bad = [a for a in self.actions if a not in ACTIONS]
        if bad:
            raise ValueError(f"actions: expected each of {ACTIONS}, got {bad}")

    def bin_of(self, atr: np.ndarray) -> np.ndarray:
        """Bin number of each ATR value."""
        return np.searchsorted(np.asarray(self.edges, float), np.asarray(atr, float), side="right")

    def apply(self, direction: np.ndarray, atr: np.ndarray) -> np.ndarray:
        """Adapted directions: follow keeps, flip negates, skip sets 0."""
        d = np.asarray(direction, int).copy()
        b = self.bin_of(atr)
        act = np.asarray(self.actions, dtype=object)[b]
        d = np.where(act == "flip", -d, d)
        return np.where(act == "skip", 0, d)

    def to_dict(self) -> dict:
        return {"edges": list(map(float, self.edges)), "actions": list(self.actions), "table": self.table}

    @classmethod
    def from_dict(cls, d: dict) -> "ATRAdaptation":
        for k in ("edges", "actions"):
            if k not in d:
                raise ValueError(f"ATR adaptation: missing key {k!r}; expected edges, actions[, table]")
        return cls(list(map(float, d["edges"])), list(d["actions"]), list(d.get("table", [])))

    @classmethod
    def identity(cls) -> "ATRAdaptation":
        return cls([], ["follow"], [])

    def html(self) -> str:
        """The estimation table as an HTML table (for the report)."""
        head = ("<table><tr><th>bin</th><th>ATR range</th><th>sessions</th><th>hit rate</th>"
                "<th>mean log return follow</th><th>mean log return flip</th><th>action</th></tr>")
        rows = []
        for t in self.table:
            rows.append(f"<tr><td>{t['bin']}</td><td>{t['range']}</td><td>{t['count']}</td>"
                        f"<td>{t['hit_rate']:.3f}</td><td>{t['follow']:.4f}</td><td>{t['flip']:.4f}</td>"
                        f"<td>{t['action']}</td></tr>")
        return head + "".join(rows) + "</table>"


def fit_adaptation(direction: np.ndarray, atr: np.ndarray, long_return: np.ndarray,
                   short_return: np.ndarray, n_bins: int = 3, min_count: int = 8,
                   edges: Optional[np.ndarray] = None) -> ATRAdaptation:
    """Estimate per-bin actions from estimation sessions (model directions +1/-1/0 and both trade returns)."""
    direction = np.asarray(direction, int)
    atr = np.asarray(atr, float)
    lr, sr = np.asarray(long_return, float), np.asarray(short_return, float)
    if not (len(direction) == len(atr) == len(lr) == len(sr)):
        raise ValueError("fit_adaptation: direction, atr, long_return and short_return must have "
                         "equal lengths")
    if n_bins < 1:
        raise ValueError(f"n_bins: expected >= 1, got {n_bins}")
    if edges is None:
        edges = np.quantile(atr, np.linspace(0, 1, n_bins + 1)[1:-1]) if len(atr) else np.zeros(n_bins - 1)
    edges = np.asarray(edges, float)
    b = np.searchsorted(edges, atr, side="right")
    actions, table = [], []
    follow_r = np.where(direction > 0, lr, np.where(direction < 0, sr, 0.0))
    flip_r = np.where(direction > 0, sr, np.where(direction < 0, lr, 0.0))
    for k in range(len(edges) + 1):
        m = (b == k) & (direction != 0)
        n = int(m.sum())
        fo = float(_logret(follow_r[m]).mean()) if n else 0.0
        fl = float(_logret(flip_r[m]).mean()) if n else 0.0
        hit = float((follow_r[m] > 0).mean()) if n else float("nan")
        if n < min_count:
            act = "follow"
        elif max(fo, fl) < 0:
            act = "skip"
        else:
            act = "follow" if fo >= fl else "flip"
        lo = f"{edges[k - 1]:.5f}" if k > 0 else "-inf"
        hi = f"{edges[k]:.5f}" if k < len(edges) else "inf"
        actions.append(act)
        table.append({"bin": k, "range": f"[{lo}, {hi})", "count": n, "hit_rate": hit, "follow": fo,
                      "flip": fl, "action": act})
    return ATRAdaptation(list(map(float, edges)), actions, table)
