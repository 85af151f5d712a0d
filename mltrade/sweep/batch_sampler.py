"""TPE with constant liar for batches: the same proposals as Optuna's ``TPESampler``, without redoing per ask
what a batch does not change.

The sweep asks ``batch`` trials, scores them, then tells them. ``TPESampler(constant_liar=True)`` computes
at every ask, from every trial of the study: each trial's parameters in internal form (a Python loop), the
split into good and other trials, and both Parzen estimators -- the cost of one ask grows with the study,
and a 1,000-trial sweep spent ~7 of its ~11 s CPU there (``benchmarks/bench_sweep_loop.py``). Within a
batch the finished trials do not change: :class:`BatchTPESampler` keeps their split, their internal form
and the good trials' estimator until a trial finishes, and at each ask builds only the other trials'
estimator from them plus the batch's trials already proposed (the constant liar: running trials count as
bad; a running trial's parameters are read once). The observations, their order, the random draws and the rule are ``TPESampler``'s own, so the
proposals are the same (tested, and checked by the benchmark).

Relies on ``TPESampler``'s internal steps (Optuna 4-5, single objective, no constraints); where they are
missing, or anything is unusual (a running trial older than a finished one), it samples as
``TPESampler`` does.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Tuple

import numpy as np
import optuna
from optuna.samplers import TPESampler
from optuna.trial import TrialState

log = logging.getLogger(__name__)

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class BatchTPESampler(TPESampler):
    """``TPESampler(constant_liar=True)`` that reuses the finished trials' split and estimator across asks."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("multivariate", True)
        kwargs["constant_liar"] = True
        super().__init__(**kwargs)
        self._cache: Optional[Tuple[tuple, Any, Dict[str, np.ndarray], int]] = None
        self._lies: Dict[int, Dict[str, np.ndarray]] = {}    #: running trials' observations, by trial number

    def _sample(self, study: optuna.Study, trial: Any, search_space: Dict[str, Any]) -> Dict[str, Any]:
        if study._is_multi_objective() or self._constraints_func is not None:
            return super()._sample(study, trial, search_space)
        try:
            return self._sample_cached(study, trial, search_space)
        except (AttributeError, ImportError, TypeError) as exc:   # another Optuna's internals: TPE's own way
            log.debug("cached TPE unavailable (%s): TPESampler's own sampling", exc)
            return super()._sample(study, trial, search_space)

    def _finished(self, study: optuna.Study, search_space: Dict[str, Any]):
        """``(good trials' estimator, other finished trials' observations, their last number)``, cached while
        the study's finished trials stay the same."""
        from optuna.samplers._tpe.sampler import _split_trials, default_gamma

        done = study._get_trials(deepcopy=False, states=_FINISHED, use_cache=False)
        key = (len(done), done[0].number if done else -1, done[-1].number if done else -1,
               tuple(sorted((k, repr(v)) for k, v in search_space.items())))
        if self._cache is None or self._cache[0] != key:
            if self._gamma is None:
                self._gamma = default_gamma
            below, above = _split_trials(study, done, self._gamma(len(done)))
            mpe_below = self._build_parzen_estimator(study, search_space, below, handle_below=True)
            obs = self._get_internal_repr(above, search_space, study)
            self._cache = (key, mpe_below, obs, max((t.number for t in above), default=-1))
            self._lies = {}
        return self._cache[1], self._cache[2], self._cache[3]

    def _sample_cached(self, study: optuna.Study, trial: Any, search_space: Dict[str, Any]) -> Dict[str, Any]:
        mpe_below, above_obs, last = self._finished(study, search_space)
        running = [t for t in study._get_trials(deepcopy=False, states=(TrialState.RUNNING,), use_cache=False)
                   if t.number != trial.number]
        if running and running[0].number < last:       # TPE sorts the other trials by number: keep its order
            return super()._sample(study, trial, search_space)
        lies = [self._lie(study, t, search_space) for t in running]
        obs = {k: np.concatenate([above_obs[k]] + [lie[k] for lie in lies]) for k in search_space}
        mpe_above = self._parzen_estimator_cls(obs, search_space, self._parzen_estimator_parameters)
        samples = mpe_below.sample(self._rng.rng, self._n_ei_candidates)
        acq = self._compute_acquisition_func(samples, mpe_below, mpe_above)
        ret = TPESampler._compare(samples, acq)
        for name, dist in search_space.items():
            ret[name] = dist.to_external_repr(ret[name])
        return ret

    def _lie(self, study: optuna.Study, trial: Any, search_space: Dict[str, Any]) -> Dict[str, np.ndarray]:
        """A running trial's observation (empty until it holds every parameter of the space; kept once it does)."""
        lie = self._lies.get(trial.number)
        if lie is None:
            lie = self._get_internal_repr([trial], search_space, study)
            if all(len(v) for v in lie.values()):
                self._lies[trial.number] = lie
        return lie
