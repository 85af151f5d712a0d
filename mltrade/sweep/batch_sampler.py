"""TPE that proposes a whole batch from one fit: the sweep asks for ``batch`` trials, scores them, then tells.

Optuna's ``TPESampler`` rebuilds its two Parzen estimators (good trials, the rest) from every trial of the
study at each ``ask``: the cost of one ask grows with the study, and a 1,000-trial sweep spent ~7 of its
~12 s CPU there (``benchmarks/bench_sweep_loop.py``). Within one batch nothing new is learnt -- no
trial of the batch is scored before all are asked -- so :class:`BatchTPESampler` fits the estimators
once per batch (on the study's finished trials, as ``TPESampler`` does) and draws the batch's proposals
from that fit: for each proposal, ``n_ei_candidates`` candidates from the good trials' estimator, the one
with the highest ratio of the good to the other estimator taken (TPE's own rule, per proposal).

The difference from ``TPESampler(constant_liar=True)``: the batch's earlier proposals are not counted as
bad while the later ones are drawn, so a batch's proposals do not push each other apart; they stay
distinct because each takes the best of its own random candidates. The random start-up trials, the
search space and the estimators' settings are TPE's own (``n_startup_trials``, ``multivariate``, ``seed``).
Relies on ``TPESampler``'s internal steps (Optuna 4-5); where they are missing it samples as
``TPESampler`` does, one fit per ask.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

import numpy as np
import optuna
from optuna.samplers import TPESampler
from optuna.trial import TrialState

log = logging.getLogger(__name__)


class BatchTPESampler(TPESampler):
    """``TPESampler`` whose relative (multivariate) proposals of a batch come from one fit (see the module).

    Call :meth:`new_batch` with the batch's size before asking its trials: the next relative sample fits
    the estimators once and draws that many proposals; later asks take them in turn.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("multivariate", True)
        super().__init__(**kwargs)
        self._batch = 1
        self._queue: List[Dict[str, Any]] = []
        self._queue_space: Optional[tuple] = None

    def new_batch(self, size: int) -> None:
        """The next ``size`` asks are one batch (proposals drawn from one fit on the trials finished now)."""
        self._batch = max(1, int(size))
        self._queue = []
        self._queue_space = None

    def _sample(self, study: optuna.Study, trial: Any, search_space: Dict[str, Any]) -> Dict[str, Any]:
        space = tuple(sorted((k, repr(v)) for k, v in search_space.items()))
        if self._queue and self._queue_space == space:
            return self._queue.pop(0)
        try:
            drawn = self._draw(study, search_space, self._batch)
        except (AttributeError, ImportError, TypeError) as exc:   # another Optuna's internals: TPE's own way
            log.debug("batch TPE unavailable (%s): one fit per ask", exc)
            return super()._sample(study, trial, search_space)
        self._queue, self._queue_space = drawn[1:], space
        return drawn[0]

    def _draw(self, study: optuna.Study, search_space: Dict[str, Any], n: int) -> List[Dict[str, Any]]:
        """``n`` proposals from one fit of the good/other estimators on the study's finished trials."""
        from optuna.samplers._tpe.sampler import _split_trials, default_gamma, default_gamma_multiobjective

        trials = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED), use_cache=True)
        if self._gamma is None:
            self._gamma = default_gamma if len(study.directions) <= 1 else default_gamma_multiobjective
        below, above = _split_trials(study, trials, self._gamma(len(trials)))
        mpe_below = self._build_parzen_estimator(study, search_space, below, handle_below=True)
        mpe_above = self._build_parzen_estimator(study, search_space, above, handle_below=False)
        k = self._n_ei_candidates
        samples = mpe_below.sample(self._rng.rng, k * n)
        acq = self._compute_acquisition_func(samples, mpe_below, mpe_above).reshape(n, k)
        pick = np.arange(n) * k + acq.argmax(axis=1)
        out = []
        for i in pick:
            out.append({name: dist.to_external_repr(samples[name][i].item()) for name, dist in search_space.items()})
        return out
