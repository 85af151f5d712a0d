"""The session simulation and the daily baselines, now in :mod:`mltrade.baselines` (one package for
every baseline): :mod:`mltrade.baselines.simulation` and :mod:`mltrade.baselines.daily`.

This face keeps ``from mltrade.models.baselines import ...`` working for ``mltrade.models.dqn`` until
its imports point at the package.
"""
from mltrade.baselines.daily import always_long, baseline_table, buy_and_hold, random_direction  # noqa: F401
from mltrade.baselines.simulation import (REASON_CLOSE, REASON_KNOCKOUT, REASON_NONE, REASON_STOP,  # noqa: F401
                                          REASONS, TradeCosts, decisions_result, session_outcome_table,
                                          simulate_budget, step_budget, summarize, trade_outcomes)
