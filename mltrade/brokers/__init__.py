"""Brokers: the simulated ``KnockoutBroker`` (live brokers live in ``mltrade.live``)."""
from mltrade.brokers.knockout import CertPosition, KnockoutBroker

__all__ = ["KnockoutBroker", "CertPosition"]
