"""Vectorised knock-out certificates: many parameter sets over many sessions at once, equal to ``KnockoutBroker``.

For every parameter set ``p`` and session ``s`` it computes the trade an
intraday strategy makes under ``KnockoutBroker`` (decide on the close of
session bar ``decision_bar - 1``, buy at the next bar's open at the ask, hold
until the stop, the knock-out or the session's last close) with numpy arrays
over the (set, session) cells that decide:

* decision price, barrier (``barrier_from_distance`` + ``round_barrier_safe``), strike;
* knock-out at the entry bar's open (order rejected) and the entry ask;
* the first bar whose adverse extreme reaches ``max(barrier, stop level)`` in
  the certificate's direction: a look-up along the session's running-extreme
  records after the entry bar (:meth:`SessionGrid.first_touch`, built once per
  grid; no per-bar Python loop); at that bar the broker's intra-bar order
  (:mod:`mltrade.brokers.intrabar`: open first, knock-out before stop at the
  open, then the nearer level first) decides knock-out / stop and the price;
* exits at the session's last close at the bid otherwise.

``IntradayMomentum``'s ``direction_rule`` (``momentum``, ``long``, ``random`` with
its ``seed``) is a per-set parameter; the random rule replays the strategy's
``random.Random(seed).choice`` sequence, one draw per decision.

Modules: :mod:`.grid` (bars by session and bar number, first-touch look-ups), :mod:`.params`
(names, defaults, normalised parameter sets), :mod:`.signals` (what the strategy decides per session),
:mod:`.kernel` (:func:`evaluate`), :mod:`.result` (:class:`SweepResult`). The sweep
(:mod:`mltrade.sweep`) and the vectorised baselines (:mod:`mltrade.baselines.vectorised`) call it.

Only the per-certificate path is vectorised over sessions; the cash (whole
certificates, fees, compounding) is a cheap loop over sessions vectorised
over the session's fills. Every price comes from :mod:`mltrade.products`.

Financing: the broker moves a mini future's financing level once per UTC
calendar day from the day it was ordered. An intraday trade never spans a UTC
day change (``session_grid`` checks that every session lies within one UTC
day), so intraday trades carry no financing; the financing parameters are
accepted and validated for the day a sweep spans sessions overnight.
"""
from mltrade.brokers.vectorised.grid import SessionGrid, session_grid, utc_day_numbers
from mltrade.brokers.vectorised.kernel import evaluate, evaluate_bars
from mltrade.brokers.vectorised.params import (DEFAULTS, DIRECTION_RULES, RULE_LONG, RULE_MOMENTUM, RULE_RANDOM,
                                               SCALAR_PARAMS, param_sets)
from mltrade.brokers.vectorised.result import (EXIT_KNOCKOUT, EXIT_NONE, EXIT_REASONS, EXIT_SESSION_END, EXIT_STOP,
                                               NO_TRADE, REJECTED_CASH, REJECTED_KNOCKOUT, TRADED, SweepResult)
from mltrade.brokers.vectorised.signals import (SignalFn, Signals, momentum_signals, random_directions,
                                                session_signals)

__all__ = ["SessionGrid", "session_grid", "utc_day_numbers", "evaluate", "evaluate_bars", "DEFAULTS",
           "DIRECTION_RULES", "RULE_LONG", "RULE_MOMENTUM", "RULE_RANDOM", "SCALAR_PARAMS", "param_sets",
           "EXIT_KNOCKOUT", "EXIT_NONE", "EXIT_REASONS", "EXIT_SESSION_END", "EXIT_STOP", "NO_TRADE",
           "REJECTED_CASH", "REJECTED_KNOCKOUT", "TRADED", "SweepResult", "SignalFn", "Signals",
           "momentum_signals", "random_directions", "session_signals"]
