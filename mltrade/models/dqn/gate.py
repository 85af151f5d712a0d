"""Confidence gate and drawdown gate for the ensemble's decisions.

The confidence gate is a logistic regression (scikit-learn, standardised inputs)
on: ensemble agreement and vote shares, the agents' mean and spread of the
long-vs-short Q margin, weekday / day-of-month one-hots, recent performance of
the strategy and of the opposite strategy, RSI (close and open), EMA ratio,
Bollinger bandwidth and %B, stochastic %K and the SMA(5/10) crossover sign.
Every market value is lagged one session (known before the session opens). The
probability threshold is chosen on validation data only; "no gate" (threshold
0) stays a candidate so the gate is used only when it helped on validation.

The drawdown gate refuses new trades while the sum of the strategy's last
``window`` ungated trade returns is below ``limit`` (it watches the shadow
decisions, so it can recover while not trading).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np
import pandas as pd

from mltrade.models.dqn.observations import calendar_onehots


def _rsi(x: pd.Series, n: int = 14) -> pd.Series:
    d = x.diff()
    up = d.clip(lower=0).ewm(alpha=1.0 / n, adjust=False).mean()
    dn = (-d.clip(upper=0)).ewm(alpha=1.0 / n, adjust=False).mean()
    return 100.0 - 100.0 / (1.0 + up / dn.replace(0, np.nan))


def technical_features(daily: pd.DataFrame) -> pd.DataFrame:
    """RSI, EMA ratio, Bollinger, stochastic and SMA crossover, each lagged one session."""
    c, o, h, lo = (daily[k].astype(float) for k in ("close", "open", "high", "low"))
    ma20, sd20 = c.rolling(20).mean(), c.rolling(20).std()
    upper, lower = ma20 + 2 * sd20, ma20 - 2 * sd20
    hh, ll = h.rolling(14).max(), lo.rolling(14).min()
    f = pd.DataFrame({
        "rsi": _rsi(c) / 100.0,
        "rsi_open": _rsi(o) / 100.0,
        "rsi_open_chg": (_rsi(o) - _rsi(o).shift(1)) / 100.0,
        "ema_ratio": c.ewm(span=12, adjust=False).mean() / c.ewm(span=26, adjust=False).mean() - 1.0,
        "bb_width": (upper - lower) / ma20,
        "bb_pctb": (c - lower) / (upper - lower),
        "stoch_k": (c - ll) / (hh - ll).replace(0, np.nan),
        "sma_cross": np.sign(c.rolling(5).mean() - c.rolling(10).mean()),
    }, index=daily.index)
    return f.shift(1)


def gate_features(votes: pd.DataFrame, margins: np.ndarray, shadow: np.ndarray, opposite: np.ndarray,
                  daily: pd.DataFrame, perf_window: int = 10,
                  deviations: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """Gate inputs per session. ``shadow``/``opposite``: certificate returns of the ungated decision
    and of the opposite direction (NaN where no trade); only earlier sessions enter a row."""
    n_agents = votes[["n_long", "n_none", "n_short"]].iloc[0].sum() if len(votes) else 1
    m = np.asarray(margins, float)
    f = pd.DataFrame({
        "agreement": votes["agreement"].to_numpy(float),
        "share_long": votes["n_long"].to_numpy(float) / n_agents,
        "share_short": votes["n_short"].to_numpy(float) / n_agents,
        "margin_mean": m.mean(axis=0), "margin_std": m.std(axis=0),
        "direction": votes["direction"].to_numpy(float),
    }, index=votes.index)
    s = pd.Series(shadow, index=votes.index)
    op = pd.Series(opposite, index=votes.index)
    f["perf_strategy"] = s.shift(1).rolling(perf_window, min_periods=1).mean().fillna(0.0)
    f["perf_opposite"] = op.shift(1).rolling(perf_window, min_periods=1).mean().fillna(0.0)
    tech = technical_features(daily).reindex(votes.index)
    f = pd.concat([f, tech, calendar_onehots(votes.index)], axis=1)
    if deviations is not None:
        f = pd.concat([f, deviations.reindex(votes.index)], axis=1)
    return f.astype(float).fillna(0.0)


@dataclass
class ConfidenceGate:
    """Logistic-regression gate; ``threshold == 0`` means the gate lets everything through."""

    columns: List[str]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    threshold: float = 0.0

    @classmethod
    def fit(cls, X: pd.DataFrame, y: np.ndarray, C: float = 0.5, seed: int = 0) -> "ConfidenceGate":
        """Fit on sessions with a trade: ``y`` = 1 where the trade made money."""
        from sklearn.linear_model import LogisticRegression

        y = np.asarray(y, int)
        Xv = X.to_numpy(float)
        mean, sd = Xv.mean(0), Xv.std(0)
        scale = np.where(sd > 0, sd, 1.0)
        Z = (Xv - mean) / scale
        if len(np.unique(y)) < 2:
            coef = np.zeros(Xv.shape[1])
            p = float(np.clip(y.mean() if len(y) else 0.5, 1e-6, 1 - 1e-6))
            return cls(list(X.columns), mean, scale, coef, float(np.log(p / (1 - p))))
        clf = LogisticRegression(C=C, max_iter=1000, random_state=seed).fit(Z, y)
        return cls(list(X.columns), mean, scale, clf.coef_[0].astype(float), float(clf.intercept_[0]))

    def proba(self, X: pd.DataFrame) -> np.ndarray:
        """Probability that a trade on each row makes money."""
        missing = [c for c in self.columns if c not in X.columns]
        if missing:
            raise ValueError(f"gate features: missing column(s) {missing[:5]}")
        Z = (X[self.columns].to_numpy(float) - self.mean) / self.scale
        return 1.0 / (1.0 + np.exp(-np.clip(Z @ self.coef + self.intercept, -50.0, 50.0)))

    def allows(self, X: pd.DataFrame) -> np.ndarray:
        """True where the probability reaches the threshold."""
        return self.proba(X) >= self.threshold

    def choose_threshold(self, proba: np.ndarray, score: Callable[[np.ndarray], float],
                         min_trades: int = 5, grid: Optional[np.ndarray] = None,
                         eligible: Optional[np.ndarray] = None) -> Dict[str, float]:
        """Pick the threshold maximising ``score(allowed_mask)`` on validation data (0 = no gate).

        ``eligible`` marks the sessions with a trade to gate; a threshold must keep
        at least ``min_trades`` of them.
        """
        p = np.asarray(proba, float)
        elig = np.ones(len(p), bool) if eligible is None else np.asarray(eligible, bool)
        if grid is None:
            grid = np.unique(np.round(np.quantile(p[elig], np.linspace(0.0, 0.8, 17)), 4)) if elig.any() \
                else np.array([])
        best_t, best_s = 0.0, score(np.ones(len(p), bool))
        for t in grid:
            mask = p >= t
            if (mask & elig).sum() < min_trades:
                continue
            s = score(mask)
            if s > best_s + 1e-12:
                best_t, best_s = float(t), s
        self.threshold = best_t
        return {"threshold": best_t, "score": float(best_s)}

    def to_dict(self) -> dict:
        return {"columns": self.columns, "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "coef": self.coef.tolist(), "intercept": self.intercept, "threshold": self.threshold}

    @classmethod
    def from_dict(cls, d: dict) -> "ConfidenceGate":
        return cls(list(d["columns"]), np.asarray(d["mean"], float), np.asarray(d["scale"], float),
                   np.asarray(d["coef"], float), float(d["intercept"]), float(d.get("threshold", 0.0)))


def drawdown_block(shadow: np.ndarray, window: int = 20, limit: float = -1.0) -> np.ndarray:
    """True where the sum of the last ``window`` earlier shadow trade returns is below ``limit``."""
    s = pd.Series(np.nan_to_num(np.asarray(shadow, float), nan=0.0))
    recent = s.shift(1).rolling(int(window), min_periods=1).sum().fillna(0.0)
    return (recent < limit).to_numpy()
