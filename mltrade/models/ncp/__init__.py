"""NCP/LTC strategy model: dual-branch network over daily features and early-session candles.

Training, walk-forward Optuna search and the one-time holdout evaluation. Layout in sessions
(chronological, see :mod:`mltrade.models.walkforward` and :func:`.data.split`)::

    [ search region: walk-forward folds (train | val | scored) ... ][emb][ final val ][emb][ holdout ]

Each trial trains one model per fold (early stopping on the fold's val range)
and is scored by the knock-out strategy's performance on the fold's scored
range. Selection (the Optuna trial, the registry's keep/replace) uses these
validation scores only. The final model is trained on the sessions before its
own early-stopping window ("final val", after the search region); the ATR
adaptation is estimated on the fold models' scored ranges (out of fold, never a
model's own early-stopping window). The holdout is touched once per model, to
score and report it; nothing is chosen by it.

Modules, bottom to top (each imports only modules listed before it)
* :mod:`.dataset` features and labels from bars (``NCPDataset``, ``PayoffSpec``, ``build_dataset``).
* :mod:`.model` the network (``NCPConfig``, ``build_model``, ``predict_proba``, ``.keras`` persistence).
* :mod:`.adapt` the ATR adaptation (``ATRAdaptation``, ``fit_adaptation``).
* :mod:`.history` daily bars before the data, for the indicators' warm-up.
* :mod:`.settings` ``NCPSettings`` (the ``[ncp]`` section, validated), ``OBJECTIVES``, ``LOSSES``, ``LAYOUT``.
* :mod:`.data` the configured bars, the dataset (cached on disk), ``split`` into folds.
* :mod:`.scoring` ``directions``, ``trade_returns``, ``score``, ``performance``, ``baselines``, constant
  outputs, the holdout's significance.
* :mod:`.fit` ``DEFAULT_PARAMS``, ``config_from_params``, TensorFlow's threads and device,
  ``sample_weights``, ``FoldTrainer``, ``fold_predictions``.
* :mod:`.artifact` ``model.keras`` + ``ncp.json`` (``write_artifact``, ``load_artifact``), ``format_metrics``.
* :mod:`.final` ``train_final`` (final model, holdout, registry offer) and the learner ladder beside it.
* :mod:`.search` ``suggest_params``, ``evaluate_params``, the shared study and its workers, ``search_pbo``,
  ``optimize``, ``best_params``.
* :mod:`.synthetic` planted-pattern markets for the learning tests.

Typical use::

    mltrade train ncp                     # default parameters (or the study's best), final model, holdout
    mltrade optimize ncp --trials 20      # walk-forward search, then the final model on the best trial
"""
