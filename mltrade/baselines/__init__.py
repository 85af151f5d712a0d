"""Every baseline a result is shown beside, in one package; its modules sit on the floors of what
they use (``scripts/house_map.py``), so the package face imports only the names:

* :mod:`~mltrade.baselines.names` — the baselines' keys and readable names (floor 3).
* :mod:`~mltrade.baselines.simulation` — the session-by-session knock-out trade simulation the daily
  learners train on and are scored by (floor 3).
* :mod:`~mltrade.baselines.daily` — buy-and-hold, always-long and random direction on a daily
  learner's sessions, in that simulation (floor 3).
* :mod:`~mltrade.baselines.vectorised` — a backtest's baselines as per-bar equity and round trips
  without backtrader: buy-and-hold in closed form, the rule baselines on the sweep engine (floor 3).
* :mod:`~mltrade.baselines.session_strategy` — ``SessionBaseline``, the always-long / random
  baseline of a day or night strategy as a backtrader strategy (floor 4, beside the strategies).
* :mod:`~mltrade.baselines.runs` — ``baseline_results``: the three baselines of a backtest on the
  strategy's bars, certificates and session kind (floor 5, beside the backtest).
"""
from mltrade.baselines.names import BASELINE_LABELS, BASELINE_NAMES, baseline_label

__all__ = ["BASELINE_LABELS", "BASELINE_NAMES", "baseline_label"]
