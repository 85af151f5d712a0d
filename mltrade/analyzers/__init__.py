"""Analyzers that turn a knock-out backtest into plain data (dicts, DataFrames, JSON, CSV).

The code lives in :mod:`mltrade.analyzers.performance`; this package keeps the face
``from mltrade.analyzers import KnockoutTrades, EquityCurve, KnockoutStats, performance, ...``.
"""
from mltrade.analyzers.performance import (TRADE_COLUMNS, EquityCurve, KnockoutStats, KnockoutTrades,
                                           daily_returns, export_csv, export_json, performance, trades_frame)

__all__ = ["TRADE_COLUMNS", "EquityCurve", "daily_returns", "KnockoutStats", "KnockoutTrades", "export_csv",
           "export_json", "performance", "trades_frame"]
