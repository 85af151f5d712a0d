"""Scoring parameter sets on the validation folds and the held-out test range: vectorised, or through the broker.

The vectorised kernel (:mod:`mltrade.brokers.vectorised`) scores a whole batch of sets in one call where it
reproduces the strategy (:data:`~mltrade.sweep.signals.VECTOR_SIGNALS`); the full backtrader runs
(``mltrade.strategy_run.run_strategy``) score one set at a time, confirm the best and run the held-out test.
"""
from __future__ import annotations

import copy
import math
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from mltrade.brokers.vectorised import DEFAULTS, SignalFn, evaluate, param_sets, session_grid
from mltrade.settings import settings_of
from mltrade.sweep.layout import make_layout
from mltrade.sweep.settings import SweepSettings
from mltrade.sweep.signals import VECTOR_SIGNALS
from mltrade.sweep.space import base_params, space_of

FLOOR = 1e-6  #: log growth of a ruined fold is log(FLOOR)


class Scorer:
    """Scores parameter sets on the validation folds / test range, vectorised or through the broker."""

    def __init__(self, cfg: dict, settings: SweepSettings, bars: Optional[pd.DataFrame] = None) -> None:
        from mltrade.feeds.source import load_bars
        from mltrade.strategies.registry import get_strategy

        self.cfg, self.s = cfg, settings
        self.cls = get_strategy(settings.strategy)
        self.space = space_of(self.cls)
        self.base = base_params(cfg, self.cls)
        if bars is None:
            c = copy.deepcopy(cfg)
            c["backtest"]["start"], c["backtest"]["end"] = settings.start, settings.end
            bars = load_bars(c)
        self.bars = bars
        run = settings_of(cfg).backtest
        self.exchange = run.exchange
        self.interval = int(run.interval)
        self.grid = session_grid(bars, self.exchange, self.interval)
        self.layout = make_layout(self.grid.sessions, settings.folds, settings.test_frac)
        # engine broker: every trial is scored through backtrader (slow, honest); vector: the numpy evaluator
        self.signal = self._vector_signal() if settings.engine == "vector" else None
        if settings.engine == "vector" and self.signal is None:
            raise ValueError(f"engine: the vectorised evaluator cannot run {self.cls.__name__} with these settings "
                             f"(it reproduces {', '.join(f'{k} {v[1]}' for k, v in VECTOR_SIGNALS.items())} "
                             f"with whole certificates and the parameters {', '.join(sorted(DEFAULTS))}); "
                             f"use --engine broker")
        self._fold_grids = [self.grid.subset(a, b) for a, b in self.layout.folds]
        self._test_grid = self.grid.subset(*self.layout.test)

    def _vector_signal(self) -> Optional[SignalFn]:
        spec = VECTOR_SIGNALS.get(self.cls.__name__)
        if spec is None or bool(settings_of(self.cfg).broker.fractional):
            return None
        fn, fixed = spec
        for k, v in fixed.items():
            if self.base.get(k, v) != v:
                return None
        if any(k not in DEFAULTS for k in self.base if k not in fixed):
            return None
        return fn

    def sets(self, params: Sequence[dict]) -> List[dict]:
        """Trial parameters merged over the fixed ones, as evaluator parameter sets."""
        keep = set(DEFAULTS)
        return [{k: v for k, v in {**self.base, **p}.items() if k in keep} for p in params]

    # -- vectorised
    def vector_fold(self, params: Sequence[dict], fold: int, returns: bool = False):
        """Log growth of each parameter set on validation fold ``fold`` (and, with ``returns``, the
        ``(n_sets, n_sessions)`` session returns)."""
        res = evaluate(self._fold_grids[fold], param_sets(self.sets(params)), self.signal)
        growth = np.log(np.maximum(res.final_cash / res.params["cash"][:, 0], FLOOR))
        return (growth, res.session_returns()) if returns else growth

    def vector_test(self, params: Sequence[dict]):
        """The evaluator's result on the held-out test range."""
        return evaluate(self._test_grid, param_sets(self.sets(params)), self.signal)

    # -- full backtrader runs
    def _slice(self, a: int, b: int) -> pd.DataFrame:
        s = self.grid.sessions
        lo = pd.Timestamp(s[a]).tz_localize(self.bars.index.tz)
        hi = pd.Timestamp(s[b - 1]).tz_localize(self.bars.index.tz) + pd.Timedelta(days=1)
        return self.bars[(self.bars.index >= lo) & (self.bars.index < hi)]

    def broker_run(self, params: dict, a: int, b: int):
        """``mltrade.strategy_run.run_strategy`` of the strategy with ``params`` on sessions ``[a, b)``."""
        from mltrade.strategy_run import run_strategy, strategy_kwargs

        c = copy.deepcopy(self.cfg)
        c["strategy"]["name"] = self.s.strategy
        c["strategy"]["params"] = {**c["strategy"].get("params", {}), **params}
        return run_strategy(self._slice(a, b), self.cls, strategy_kwargs(self.cls, c), c)

    def baselines(self, params: dict, a: int, b: int, results: bool = False) -> Dict[str, dict]:
        """``mltrade.baselines.runs.baseline_runs`` (buy-and-hold, always long, random direction) on sessions ``[a, b)``
        (with ``results``: ``baseline_results``, each with its equity and trades)."""
        from mltrade.baselines.runs import baseline_results, baseline_runs
        from mltrade.strategy_run import strategy_kwargs

        c = copy.deepcopy(self.cfg)
        c["strategy"]["name"] = self.s.strategy
        c["strategy"]["params"] = {**c["strategy"].get("params", {}), **params}
        run = baseline_results if results else baseline_runs
        return run(self._slice(a, b), self.cls, strategy_kwargs(self.cls, c), c)

    def broker_fold(self, params: dict, fold: int, returns: bool = False):
        """Log growth of one parameter set on validation fold ``fold``, through the broker (and, with
        ``returns``, its session returns: the last equity of each session against the one before)."""
        a, b = self.layout.folds[fold]
        res = self.broker_run(params, a, b)
        final = float(res.equity["value"].iloc[-1]) if len(res.equity) else self.base["cash"]
        growth = math.log(max(final / self.base["cash"], FLOOR))
        if not returns:
            return growth
        eq = res.equity["value"]
        by_day = eq.groupby(pd.DatetimeIndex(eq.index).normalize()).last() if len(eq) else eq
        days = pd.DatetimeIndex(self.grid.sessions[a:b]).normalize()
        if by_day.index.tz is not None:
            by_day.index = by_day.index.tz_localize(None)
        closes = by_day.reindex(days).ffill().fillna(self.base["cash"]).to_numpy(float)
        prev = np.r_[self.base["cash"], closes[:-1]]
        with np.errstate(divide="ignore", invalid="ignore"):
            return growth, np.where(prev > 0, closes / prev - 1.0, 0.0)
