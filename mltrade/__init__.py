"""mltrade: backtest, optimise and trade knock-out certificates with ML strategies on backtrader."""
import os as _os

# TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) is noise for a CLI user
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
