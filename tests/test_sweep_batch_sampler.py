"""BatchTPESampler: the proposals of Optuna's TPESampler(constant liar), with the finished trials' work done once."""
from __future__ import annotations

import optuna

from mltrade.sweep.batch_sampler import BatchTPESampler
from mltrade.sweep.space import suggest

SPACE = {"decision_bar": (3, 60), "distance": (0.01, 0.1), "stop": (0.3, 0.95), "rule": ["momentum", "long"]}


def _value(p: dict) -> float:
    return -p["distance"] + 0.001 * p["decision_bar"] + (0.01 if p["rule"] == "long" else 0.0)


def _sweep(sampler, batches: int = 4, batch: int = 15) -> list:
    """Ask a batch, then tell it (a third pruned, one failed), as the sweep does; every proposal in order."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    out = []
    for _ in range(batches):
        asked = [study.ask() for _ in range(batch)]
        params = [suggest(t, SPACE) for t in asked]
        out += params
        for i, (t, p) in enumerate(zip(asked, params)):
            if i == 0:
                study.tell(t, state=optuna.trial.TrialState.FAIL)
            elif i % 3 == 0:
                t.report(_value(p), 0)
                study.tell(t, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(t, _value(p))
    return out


def test_it_proposes_what_tpe_with_constant_liar_proposes():
    want = _sweep(optuna.samplers.TPESampler(seed=3, n_startup_trials=10, multivariate=True, constant_liar=True))
    got = _sweep(BatchTPESampler(seed=3, n_startup_trials=10, multivariate=True))
    assert got == want
    assert got != _sweep(BatchTPESampler(seed=4, n_startup_trials=10, multivariate=True))


def test_the_finished_trials_are_read_once_per_batch(monkeypatch):
    calls = []
    real = BatchTPESampler._build_parzen_estimator

    def counted(self, *a, **kw):
        calls.append(1)
        return real(self, *a, **kw)

    monkeypatch.setattr(BatchTPESampler, "_build_parzen_estimator", counted)
    _sweep(BatchTPESampler(seed=3, n_startup_trials=10, multivariate=True), batches=3, batch=15)
    assert len(calls) == 2          # the good trials' estimator, once per batch after the start-up one
    calls.clear()
    monkeypatch.setattr(optuna.samplers.TPESampler, "_build_parzen_estimator", counted)
    _sweep(optuna.samplers.TPESampler(seed=3, n_startup_trials=10, multivariate=True, constant_liar=True),
           batches=3, batch=15)
    assert len(calls) == 2 * 2 * 15  # TPESampler: both estimators at every ask of the two fitted batches
