"""mltrade: backtest, optimise and trade knock-out certificates with ML strategies on backtrader."""
import os as _os

# TensorFlow's C++ INFO/WARNING lines are noise for a user; set before anything imports TensorFlow.
# (Lines logged before TensorFlow reads this, e.g. CUDA probing, are silenced by mltrade.tfquiet.quiet_tensorflow.)
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
