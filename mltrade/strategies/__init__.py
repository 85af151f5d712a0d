"""Strategies: the ``KnockoutStrategy`` base, reference strategies and the registry by name."""
from mltrade.strategies.base import KnockoutStrategy
from mltrade.strategies.decision import Decision, DecisionContext
from mltrade.strategies.reference import BuyAndHold, IntradayMomentum
from mltrade.strategies.registry import get_strategy, register_strategy, strategy_names

__all__ = ["KnockoutStrategy", "Decision", "DecisionContext", "IntradayMomentum", "BuyAndHold",
           "get_strategy", "register_strategy", "strategy_names"]
