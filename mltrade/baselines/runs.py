"""The three baselines of a backtest, run beside the strategy on the same bars: buy-and-hold (fully
invested), always-long and random direction in the strategy's certificates and session kind.

Vectorised where the engines apply (:mod:`mltrade.baselines.vectorised`, equal to backtrader to the
cent), else backtrader runs (:func:`mltrade.strategy_run.run_strategy`) of
:class:`~mltrade.strategies.reference.BuyAndHold`, :class:`~mltrade.strategies.reference.IntradayMomentum`
with a ``direction_rule`` and :class:`~mltrade.baselines.session_strategy.SessionBaseline`.
"""
from __future__ import annotations

from typing import Optional, Type

import pandas as pd

from mltrade.analyzers import performance
from mltrade.annualise import sessions_per_year
from mltrade.baselines import vectorised as fast
from mltrade.baselines.session_strategy import SessionBaseline
from mltrade.strategies.base import KnockoutStrategy
from mltrade.strategies.model_info import ModelScope
from mltrade.strategies.reference import BuyAndHold, IntradayMomentum
from mltrade.strategies.registry import strategy_params
from mltrade.settings import settings_of
from mltrade.strategy_run import BacktestResult, run_strategy

__all__ = ["baseline_kwargs", "baseline_runs", "baseline_results"]


def baseline_kwargs(kwargs: dict) -> dict:
    """The strategy's certificate, stake and stop parameters that the rule baselines share."""
    valid = set(strategy_params(IntradayMomentum)) & set(strategy_params(SessionBaseline))
    skip = {"direction_rule", "seed", "min_move", "decision_bar", "overlay", "context_candles", "session"}
    return {k: v for k, v in kwargs.items() if k in valid and k not in skip}


def _run_frames(equity: pd.DataFrame, trades: pd.DataFrame, cfg: dict) -> BacktestResult:
    """A :class:`BacktestResult` of frames computed without backtrader, summed up as a run's are."""
    run = settings_of(cfg).backtest
    periods = sessions_per_year(equity.index, run.exchange or None) if len(equity) else None
    return BacktestResult(summary=performance(equity, trades, float(run.cash), periods=periods),
                          trades=trades, equity=equity)


def baseline_runs(bars: pd.DataFrame, cls: Type[KnockoutStrategy], kwargs: dict, cfg: dict,
                  progress: bool = False, scope: Optional[ModelScope] = None, engine: str = "auto") -> dict:
    """The baselines' summaries ``{name: summary}`` (see :func:`baseline_results`)."""
    runs = baseline_results(bars, cls, kwargs, cfg, progress, scope, engine)
    return {k: r.summary for k, r in runs.items()}


def baseline_results(bars: pd.DataFrame, cls: Type[KnockoutStrategy], kwargs: dict, cfg: dict,
                     progress: bool = False, scope: Optional[ModelScope] = None,
                     engine: str = "auto", distances: Optional[dict] = None) -> dict:
    """Buy-and-hold (fully invested), always-long and random-direction runs on the same bars.

    The rule baselines trade the strategy's certificates in its session kind (``scope.session``:
    intraday after ``scope.decision_bar`` candles, day or night). ``engine``: ``auto`` (vectorised
    engines where they apply, equal to backtrader to the cent), ``backtrader`` (every run through
    backtrader). ``distances``: day/night baselines' barrier per decision date (the DQN ensemble's own,
    ``DQNEnsembleStrategy.baseline_distances``). Returns ``{name: BacktestResult}``.
    """
    if engine not in ("auto", "backtrader"):
        raise ValueError(f"engine: expected 'auto' or 'backtrader', got {engine!r}")
    s = settings_of(cfg)
    scope = scope or ModelScope(s.strategy.name, decision_bar=int(kwargs.get("decision_bar", 17)))
    b = s.broker
    cash = float(s.backtest.cash)
    out: dict = {}
    if engine == "auto":
        eq, tr = fast.buy_and_hold_frames(bars, cash, float(b.commission_fixed), float(b.commission_pct),
                                          bool(b.fractional))
        out["buy_and_hold"] = _run_frames(eq, tr, cfg)
    else:
        out["buy_and_hold"] = run_strategy(bars, BuyAndHold, {}, cfg, progress, "buy-and-hold")
    common = baseline_kwargs(kwargs)
    seed = int(s.backtest.baseline_seed)
    for name, rule in (("always_long", "long"), ("random_direction", "random")):
        if scope.session in ("day", "night"):
            kw = dict(common, session=scope.session, direction_rule=rule, seed=seed, distances=distances)
            out[name] = run_strategy(bars, SessionBaseline, kw, cfg, progress, name)
            continue
        if engine == "auto":
            try:
                res = fast.rule_sweep(bars, common, cfg, rule, scope.decision_bar)
            except ValueError:
                res = None          # gaps in the bars, fractional sizing: backtrader below
            if res is not None:
                out[name] = _run_frames(*fast.sweep_frames(res, 0), cfg)
                continue
        kw = dict(common, decision_bar=scope.decision_bar, direction_rule=rule, seed=seed)
        out[name] = run_strategy(bars, IntradayMomentum, kw, cfg, progress, name)
    return out
