"""What the kernel returns: every set's trades in every session (laid out on first access) and its cash."""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from mltrade.brokers.vectorised.grid import SessionGrid

#: trade status per (set, session)
NO_TRADE, TRADED, REJECTED_KNOCKOUT, REJECTED_CASH = 0, 1, 2, 3
#: exit reasons (codes index this tuple)
EXIT_REASONS = ("none", "session_end", "stop", "knockout")
EXIT_NONE, EXIT_SESSION_END, EXIT_STOP, EXIT_KNOCKOUT = 0, 1, 2, 3


#: per-trade fields of :class:`SweepResult` (materialised as ``(n_sets, n_sessions)`` arrays on first access)
_TRADE_FIELDS = {  # name: (fill value, dtype)
    "entry_bar": (-1, np.int64), "exit_bar": (-1, np.int64), "exit_reason": (EXIT_NONE, np.int8),
    "entry_price": (np.nan, float), "exit_price": (np.nan, float), "entry_underlying": (np.nan, float),
    "exit_underlying": (np.nan, float), "size": (0.0, float), "fees": (0.0, float), "pnl": (0.0, float),
}
_ACTIVE_FIELDS = {"status": (NO_TRADE, np.int8), "strike": (np.nan, float), "barrier": (np.nan, float)}


class SweepResult:
    """Trades of every set in every session and each set's cash.

    ``status``, ``direction``, ``entry_bar`` ... ``pnl`` are ``(n_sets, n_sessions)``
    arrays; the evaluator keeps them compact (one entry per decision or trade)
    and lays them out on first access. ``cash`` (after each session) and
    ``final_cash`` are computed eagerly.
    """

    def __init__(self, grid: SessionGrid, params: Dict[str, np.ndarray], direction: np.ndarray,
                 details: Callable[[], Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]], cash: np.ndarray,
                 final_cash: np.ndarray) -> None:
        self.grid, self.params, self.direction = grid, params, direction
        self.cash, self.final_cash = cash, final_cash       #: cash after each session / at the end
        self._details = details     # -> (per decision, per trade) compact arrays; "cell" = set * n_sessions + session
        self._compact: Optional[Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]] = None
        self._full: Dict[str, np.ndarray] = {}

    def compact(self) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
        """``(decisions, trades)``: one entry per decision / filled trade, ``cell`` = set * n_sessions + session."""
        if self._compact is None:
            self._compact = self._details()
        return self._compact

    def __getattr__(self, name: str) -> np.ndarray:
        spec = _TRADE_FIELDS.get(name), _ACTIVE_FIELDS.get(name)
        if name.startswith("_") or spec == (None, None):
            raise AttributeError(name)
        if name not in self._full:
            src = self.compact()[1 if spec[0] else 0]
            fill, dtype = spec[0] or spec[1]
            out = np.full(self.direction.size, fill, dtype=dtype)
            out[src["cell"]] = src[name]
            self._full[name] = out.reshape(self.direction.shape)
        return self._full[name]

    @property
    def n_sets(self) -> int:
        """Number of parameter sets (rows)."""
        return self.direction.shape[0]

    def total_return(self) -> np.ndarray:
        """Final cash over starting cash, minus 1, per set."""
        return self.final_cash / self.params["cash"][:, 0] - 1.0

    def trade_count(self) -> np.ndarray:
        """Filled trades per set."""
        return np.bincount(self.compact()[1]["cell"] // max(self.direction.shape[1], 1), minlength=self.n_sets)

    def session_returns(self) -> np.ndarray:
        """Per-session relative change of the cash (n_sets, n_sessions)."""
        after = self.cash.T                                   # sessions x sets: contiguous as computed
        prev = np.concatenate([self.params["cash"].T, after[:-1]], axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(prev > 0, after / prev - 1.0, 0.0).T

    def trades(self, i: int) -> pd.DataFrame:
        """The round trips of set ``i`` (one row per trade, like ``KnockoutBroker.roundtrips``)."""
        s = np.flatnonzero(self.status[i] == TRADED)
        t = self.grid.times
        ent = pd.DatetimeIndex(t[s, self.entry_bar[i, s]]).tz_localize("UTC").tz_convert(self.grid.tz)
        ext = pd.DatetimeIndex(t[s, self.exit_bar[i, s]]).tz_localize("UTC").tz_convert(self.grid.tz)
        return pd.DataFrame({
            "session": self.grid.sessions[s], "direction": np.where(self.direction[i, s] > 0, "long", "short"),
            "strike": self.strike[i, s], "barrier": self.barrier[i, s], "size": self.size[i, s],
            "entry_time": ent, "entry_price": self.entry_price[i, s], "entry_underlying": self.entry_underlying[i, s],
            "exit_time": ext, "exit_price": self.exit_price[i, s], "exit_underlying": self.exit_underlying[i, s],
            "exit_reason": [EXIT_REASONS[r] for r in self.exit_reason[i, s]],
            "fees": self.fees[i, s], "pnl": self.pnl[i, s],
        })

    @staticmethod
    def concat(parts: Sequence["SweepResult"], params: Dict[str, np.ndarray]) -> "SweepResult":
        """Join results over consecutive chunks of sets (same grid) into one."""
        n_s = parts[0].direction.shape[1]
        offs = np.cumsum([0] + [r.n_sets for r in parts[:-1]]) * n_s

        def details() -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
            both = [r.compact() for r in parts]
            out = []
            for which in (0, 1):
                d = {k: np.concatenate([c[which][k] for c in both]) for k in both[0][which] if k != "cell"}
                d["cell"] = np.concatenate([c[which]["cell"] + o for c, o in zip(both, offs)])
                out.append(d)
            return out[0], out[1]
        return SweepResult(parts[0].grid, params, np.concatenate([r.direction for r in parts]), details,
                           np.concatenate([r.cash for r in parts]), np.concatenate([r.final_cash for r in parts]))
