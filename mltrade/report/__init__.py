"""The backtest report: one self-contained HTML file with PNG plots, plus summary.json and trades.csv.

``write_report`` is called at the end of every backtest and by ``mltrade report RUN_DIR``
(which rebuilds the HTML from the files a run left). Strategies and overlays add
their own tables and plots through ``extra_sections`` and ``extra_figures``.

The page is :mod:`mltrade.report.page`, its charts :mod:`mltrade.report.figures`, its tables
:mod:`mltrade.report.tables`; this package keeps the face ``from mltrade.report import write_report``.
The baselines' readable names are :mod:`mltrade.baselines.names`.
"""
from mltrade.baselines.names import BASELINE_LABELS, baseline_label
from mltrade.report.figures import FIG_WIDTH, MAX_MARKED_TRADES, _figures, drawdown
from mltrade.report.page import (BASELINE_VALUE, CONVENTIONS, CSS, DEFAULT_TITLE, backtrader_plot, read_trades,
                                 rebuild, render_html, write_report, write_strategy_report)
from mltrade.report.tables import (SUMMARY_FIELDS, baseline_table_html, monthly_returns, summary_value,
                                   tearsheet_html, trades_html)

__all__ = ["BASELINE_LABELS", "BASELINE_VALUE", "CONVENTIONS", "CSS", "DEFAULT_TITLE", "FIG_WIDTH",
           "MAX_MARKED_TRADES", "SUMMARY_FIELDS", "backtrader_plot", "baseline_label", "baseline_table_html",
           "drawdown", "monthly_returns", "read_trades", "rebuild", "render_html", "summary_value",
           "tearsheet_html", "trades_html", "write_report", "write_strategy_report"]
