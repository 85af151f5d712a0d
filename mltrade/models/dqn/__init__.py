"""DQN ensemble strategy: keras-rl2-style agents on Keras 3, knock-out environment, ensembles and gates.

keras-rl2 1.0.5 (archived, written for Keras 2) does not import on TensorFlow 2.21 /
Keras 3: ``ImportError: cannot import name 'model_from_config' from
'tensorflow.keras.models'`` (tried from a downloaded wheel on PYTHONPATH). This
package therefore re-implements its DQN with the same algorithm and names.

Modules
* :mod:`.agent` ``DQNAgent`` (double/dueling DQN, hard/soft target updates, Huber
  ``delta_clip``), ``build_q_network``; ``.keras`` + JSON persistence.
* :mod:`.memory` ``SequentialMemory(limit, window_length)``.
* :mod:`.policy` ``EpsGreedyQPolicy``, ``BoltzmannQPolicy``, ``GreedyQPolicy``, ``LinearAnnealedPolicy``.
* :mod:`.observations` the original's 44 values (made causal) and feature-frame observations.
* :mod:`.deviation` the original DAX model's 53 values (44 + the deviation ensemble's predicted OHLC and
  the previous day's z), two-stage and walk-forward so no training row sees an in-sample prediction.
* :mod:`.linear` ``Scaler`` and ``RidgeOHLC`` (closed-form, shared by the ensemble and the deviation model).
* :mod:`.env` ``KnockoutEnv`` (gymnasium; day / night / intraday modes, 19 actions; terminates only where the
  reward ends, truncates at time limits).
* :mod:`.ensemble` agents per session, ``vote``, ``deviation_stats``, ``DeviationStore``.
* :mod:`.gate` ``ConfidenceGate`` (logistic regression, threshold tuned on validation), ``drawdown_block``.
* :mod:`.pipeline` ``train_walk_forward`` (used by ``mltrade train dqn``; ``[dqn] mode = "intraday"``
  trains one ensemble that decides after ``n_candles`` bars, ``IntradaySim`` prices it). Its steps:
  :mod:`.data` (bars, observations, folds), :mod:`.fold` (one fold: train, select, gate, score),
  :mod:`.simulation` (``IntradaySim``, pricing decisions), :mod:`.inference` (``decide``),
  :mod:`.bundle` (``save_bundle`` / ``load_bundle``, used by :class:`mltrade.strategies.dqn.DQNEnsembleStrategy`).
  Agents, gates and the registry choose on validation only; the holdout is scored once and reported;
  constant validation outputs are ``degenerate``.
* :mod:`.synthetic` null-world and planted-pattern daily bars for the learning tests.

The modules import top-down without a circle (``docs/dqn.md`` shows the layering).

Typical use::

    mltrade train dqn                     # walk-forward on the sample data, ~3 min on 2 cores
    mltrade backtest --strategy dqn       # trades only the model's out-of-sample sessions
"""
