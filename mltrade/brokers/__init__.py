"""Brokers: the simulated ``KnockoutBroker`` and the live ``SeleniumBroker`` that takes its place.

``SeleniumBroker`` (from :mod:`mltrade.live.broker`) is imported on first use, so importing
this package does not load Selenium.
"""
from mltrade._lazy import lazy_names
from mltrade.brokers.knockout import CertPosition, KnockoutBroker

__getattr__, __dir__ = lazy_names(__name__, globals(), {"SeleniumBroker": "mltrade.live.broker"})

__all__ = ["KnockoutBroker", "CertPosition", "SeleniumBroker"]
