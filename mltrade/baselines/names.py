"""The baselines' keys (``summary.json``, equity.csv columns) and their readable names.

Below the calculations that label their results with them (``significance``'s sentence) and the
report that shows them.
"""
from __future__ import annotations

__all__ = ["BASELINE_NAMES", "BASELINE_LABELS", "baseline_label"]

#: names of the baselines, in table order
BASELINE_NAMES = ("buy_and_hold", "always_long", "random_direction")
#: readable names of the baselines in tables, charts and the significance sentence
BASELINE_LABELS = {"buy_and_hold": "buy-and-hold", "always_long": "always-long",
                   "random_direction": "random direction"}


def baseline_label(name: str) -> str:
    """A baseline's readable name: ``buy_and_hold`` -> ``buy-and-hold``."""
    return BASELINE_LABELS.get(name, str(name).replace("_", " "))
