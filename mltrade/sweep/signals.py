"""Which strategies the vectorised kernel (:mod:`mltrade.brokers.vectorised`) reproduces, as its signal functions."""
from __future__ import annotations

from typing import Dict, Mapping, Tuple

import numpy as np

from mltrade.brokers.vectorised import SessionGrid, SignalFn, momentum_signals, session_signals

#: strategies whose decision the kernel can reproduce: class name -> (signal function, params it understands)
VECTOR_SIGNALS: Dict[str, Tuple[SignalFn, Dict[str, object]]] = {
    "IntradayMomentum": (momentum_signals, {}),
}


def signals_from_mapping(grid: SessionGrid, signals: Mapping) -> SignalFn:
    """:func:`~mltrade.brokers.vectorised.session_signals` from ``SignalStrategy``'s
    ``{date: direction | (direction, distance)}``."""
    from mltrade.strategies.signal import normalise_signals

    norm = normalise_signals(signals)
    keys = [str(s.date()) for s in grid.sessions]
    dirs = [norm.get(k, (0, None))[0] for k in keys]
    dist = [np.nan if norm.get(k, (0, None))[1] is None else norm[k][1] for k in keys]
    return session_signals(dirs, dist)
