"""Small closed-form models shared by the ensemble and the deviation model: column scaling and ridge OHLC.

A leaf module (numpy only), so that :mod:`.ensemble` and :mod:`.deviation` both
build on it without importing each other.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Scaler:
    """Column standardisation fitted on the training range (binary columns kept as they are)."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray) -> "Scaler":
        """Mean and standard deviation per column of ``X`` (0/1 columns and constant ones: unscaled)."""
        X = np.asarray(X, float)
        binary = np.all((X == 0) | (X == 1), axis=0)
        mean = np.where(binary, 0.0, X.mean(0))
        sd = X.std(0)
        scale = np.where(binary | (sd == 0), 1.0, sd)
        return cls(mean, scale)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """``(X - mean) / scale`` as float32."""
        return ((np.asarray(X, float) - self.mean) / self.scale).astype(np.float32)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Scaler":
        return cls(np.asarray(d["mean"], float), np.asarray(d["scale"], float))


@dataclass
class RidgeOHLC:
    """Closed-form ridge regression from observations to OHLC / previous close - 1."""

    coef: np.ndarray
    intercept: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray, Y: np.ndarray, alpha: float) -> "RidgeOHLC":
        """Ridge fit of ``Y`` on ``X`` with penalty ``alpha`` (intercept unpenalised)."""
        X = np.asarray(X, float)
        Y = np.asarray(Y, float)
        xm, ym = X.mean(0), Y.mean(0)
        Xc, Yc = X - xm, Y - ym
        coef = np.linalg.solve(Xc.T @ Xc + alpha * np.eye(X.shape[1]), Xc.T @ Yc)
        return cls(coef, ym - xm @ coef)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted targets for the rows of ``X``."""
        return np.asarray(X, float) @ self.coef + self.intercept

    def to_dict(self) -> dict:
        return {"coef": self.coef.tolist(), "intercept": self.intercept.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "RidgeOHLC":
        return cls(np.asarray(d["coef"], float), np.asarray(d["intercept"], float))
