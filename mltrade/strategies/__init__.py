"""Strategies: the ``KnockoutStrategy`` base, reference strategies, the ML strategies and the registry by name.

``DQNEnsembleStrategy`` and ``NCPStrategy`` are imported on first use, so importing this
package does not load TensorFlow.
"""
from mltrade._lazy import lazy_names
from mltrade.strategies.base import KnockoutStrategy
from mltrade.strategies.decision import Decision, DecisionContext
from mltrade.strategies.reference import BuyAndHold, IntradayMomentum
from mltrade.strategies.registry import get_strategy, register_strategy, strategy_names

__getattr__, __dir__ = lazy_names(__name__, globals(), {"DQNEnsembleStrategy": "mltrade.strategies.dqn",
                                                        "NCPStrategy": "mltrade.strategies.ncp"})

__all__ = ["KnockoutStrategy", "Decision", "DecisionContext", "IntradayMomentum", "BuyAndHold",
           "get_strategy", "register_strategy", "strategy_names", "DQNEnsembleStrategy", "NCPStrategy"]
