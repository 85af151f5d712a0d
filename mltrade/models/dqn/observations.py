"""Observation builders for the DQN agents: every row ``t`` uses only what is known before session ``t``.

``original_observations`` is the original's 44-value set built causally. The
original used "previous vs current OHLC" and "current OHLC vs *next* open" while
it bought at the current day's open: the current OHLC is not known at that
moment (look-ahead). Here the decision for session ``t`` is made at the close of
``t-1`` (the broker fills a market order at the next open), so the 8 ratios are

* OHLC[t-1] / OHLC[t-2] - 1   (the original's "previous vs current", shifted one day)
* OHLC[t-1] / close[t-2] - 1  (the last session's gap and range vs the close before it),

plus one-hot weekday (5) and one-hot day of month (31) of session ``t`` (known
in advance from the calendar). ``feature_observations`` accepts any numeric
feature frame that is already lagged (e.g. ``mltrade.models.features.daily_features``).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pandas as pd

OHLC = ("open", "high", "low", "close")


def _check_daily(daily: pd.DataFrame) -> None:
    missing = [c for c in OHLC if c not in daily.columns]
    if missing:
        raise ValueError(f"daily bars: missing column(s) {missing}; expected {list(OHLC)}")
    if not isinstance(daily.index, pd.DatetimeIndex):
        raise ValueError("daily bars: expected a DatetimeIndex of session dates")
    if len(daily) > 1 and not daily.index.is_monotonic_increasing:
        raise ValueError("daily bars: the index must be sorted in time order")


def calendar_onehots(index: pd.DatetimeIndex) -> pd.DataFrame:
    """One-hot weekday (Mon..Fri, 5) and day of month (1..31, 31) of each date."""
    idx = pd.DatetimeIndex(index)
    wd = np.zeros((len(idx), 5), np.float32)
    dm = np.zeros((len(idx), 31), np.float32)
    w = idx.day_of_week.to_numpy()
    ok = w < 5
    wd[np.arange(len(idx))[ok], w[ok]] = 1.0
    dm[np.arange(len(idx)), idx.day.to_numpy() - 1] = 1.0
    cols = [f"wd_{i}" for i in range(5)] + [f"dom_{i + 1}" for i in range(31)]
    return pd.DataFrame(np.hstack([wd, dm]), index=index, columns=cols)


def original_observations(daily: pd.DataFrame) -> pd.DataFrame:
    """The original's 44 values per session, causal (rows 0 and 1 are NaN: not enough history)."""
    _check_daily(daily)
    x = daily[list(OHLC)].astype(float)
    prev = x.shift(1)            # session t-1
    prev2 = x.shift(2)           # session t-2
    a = (prev / prev2.to_numpy() - 1.0).add_prefix("chg_")
    b = prev.div(prev2["close"], axis=0).sub(1.0).add_prefix("vs_close_")
    out = pd.concat([a, b, calendar_onehots(daily.index)], axis=1).astype(np.float32)
    return out


def feature_observations(features: pd.DataFrame, clip: float = 10.0) -> pd.DataFrame:
    """Validate a lagged numeric feature frame and standardise nothing: only infinities -> NaN, clipped."""
    if not isinstance(features, pd.DataFrame):
        raise ValueError("features: expected a DataFrame")
    bad = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if bad:
        raise ValueError(f"features: column(s) {bad} are not numeric")
    f = features.astype(np.float32).replace([np.inf, -np.inf], np.nan)
    return f.clip(-clip, clip)


def pipeline_observations(daily: pd.DataFrame) -> pd.DataFrame:
    """Observations from ``mltrade.models.features.daily_features`` (lagged) plus calendar one-hots."""
    try:
        from mltrade.models.features import daily_features  # written by another module owner
    except ImportError as exc:  # pragma: no cover - depends on the feature pipeline being installed
        raise ValueError("observation set 'features' needs mltrade.models.features.daily_features, "
                         f"which is not importable ({exc})") from exc
    f = feature_observations(daily_features(daily))
    cal = calendar_onehots(daily.index)
    f = f.drop(columns=[c for c in f.columns if c in cal.columns])
    return pd.concat([f, cal], axis=1)


OBSERVATION_SETS = ("original", "original_deviation", "features", "custom")


def build_observations(daily: pd.DataFrame, kind: str = "original",
                       features: Optional[pd.DataFrame] = None, deviation_model: Any = None) -> pd.DataFrame:
    """Observation frame by name: ``original`` (44 values), ``original_deviation`` (53 values, needs a
    fitted :class:`mltrade.models.dqn.deviation.DeviationModel`), ``features`` (pipeline) or ``custom``."""
    if kind == "original":
        return original_observations(daily)
    if kind == "original_deviation":
        if deviation_model is None:
            raise ValueError("observation set 'original_deviation' needs a fitted deviation model "
                             "(deviation_model=...; saved as deviation_model.json beside the ensemble)")
        # the model builds its own values (DeviationModel.observations): this module stays a leaf
        return deviation_model.observations(daily)
    if kind == "features":
        return pipeline_observations(daily)
    if kind == "custom":
        if features is None:
            raise ValueError("observation set 'custom' needs a features DataFrame")
        return feature_observations(features).reindex(daily.index)
    raise ValueError("observations: expected 'original', 'original_deviation', 'features' or 'custom', "
                     f"got {kind!r}")


def intraday_observations(intraday: pd.DataFrame, n_candles: int) -> pd.DataFrame:
    """First ``n_candles`` of each session as (high, low, close) / session open - 1, one row per session."""
    missing = [c for c in OHLC if c not in intraday.columns]
    if missing:
        raise ValueError(f"intraday bars: missing column(s) {missing}")
    dates = intraday.index.normalize()
    if getattr(dates, "tz", None) is not None:
        dates = dates.tz_localize(None)
    rows, keys = [], []
    for day, g in intraday.groupby(dates, sort=True):
        if len(g) <= n_candles:
            continue
        o0 = float(g["open"].iloc[0])
        first = g.iloc[:n_candles]
        v = np.concatenate([(first["high"].to_numpy() / o0 - 1), (first["low"].to_numpy() / o0 - 1),
                            (first["close"].to_numpy() / o0 - 1)]).astype(np.float32)
        rows.append(v)
        keys.append(day)
    cols = [f"{k}_{i}" for k in ("h", "l", "c") for i in range(n_candles)]
    return pd.DataFrame(np.array(rows).reshape(len(rows), 3 * n_candles), index=pd.DatetimeIndex(keys),
                        columns=cols)


def daily_from_intraday(intraday: pd.DataFrame) -> pd.DataFrame:
    """Aggregate intraday bars into daily session bars (naive date index)."""
    dates = intraday.index.normalize()
    if getattr(dates, "tz", None) is not None:
        dates = dates.tz_localize(None)
    g = intraday.groupby(dates, sort=True)
    out = pd.DataFrame({"open": g["open"].first(), "high": g["high"].max(), "low": g["low"].min(),
                        "close": g["close"].last()})
    if "volume" in intraday.columns:
        out["volume"] = g["volume"].sum()
    out.index = pd.DatetimeIndex(out.index)
    out.index.name = "date"
    return out
