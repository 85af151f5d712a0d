"""mltrade: backtest, optimise and trade knock-out certificates with ML strategies on backtrader."""
__version__ = "0.1.0"
