"""BatchTPESampler: one Parzen fit per batch (not one per ask), proposals inside the space, distinct, seeded."""
from __future__ import annotations

import optuna

from mltrade.sweep.batch_sampler import BatchTPESampler
from mltrade.sweep.space import suggest

SPACE = {"decision_bar": (3, 60), "distance": (0.01, 0.1), "stop": (0.3, 0.95), "rule": ["momentum", "long"]}


def _study(seed: int = 3):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=BatchTPESampler(seed=seed, n_startup_trials=10))
    for _ in range(30):                     # finished trials to fit on: the value favours small distances
        t = study.ask()
        p = suggest(t, SPACE)
        study.tell(t, -p["distance"] + 0.001 * p["decision_bar"])
    return study


def _batch(study, n: int):
    study.sampler.new_batch(n)
    asked = [study.ask() for _ in range(n)]
    params = [suggest(t, SPACE) for t in asked]
    for t in asked:
        study.tell(t, 0.0)
    return params


def test_a_batch_is_drawn_from_one_fit_inside_the_space(monkeypatch):
    study = _study()
    fits = []
    real = BatchTPESampler._build_parzen_estimator

    def counted(self, *a, **kw):
        fits.append(1)
        return real(self, *a, **kw)

    monkeypatch.setattr(BatchTPESampler, "_build_parzen_estimator", counted)
    params = _batch(study, 20)
    assert len(fits) == 2                   # good and other estimators, once for the 20 proposals
    assert len({tuple(sorted(p.items())) for p in params}) == 20
    for p in params:
        assert 3 <= p["decision_bar"] <= 60 and isinstance(p["decision_bar"], int)
        assert 0.01 <= p["distance"] <= 0.1 and 0.3 <= p["stop"] <= 0.95 and p["rule"] in ("momentum", "long")
    # the fit is TPE's: proposals lean to the small distances the finished trials favour
    assert sum(p["distance"] for p in params) / len(params) < 0.055
    fits.clear()
    _batch(study, 5)                        # the next batch fits again, on the trials finished by then
    assert len(fits) == 2


def test_the_same_seed_proposes_the_same_batch():
    assert _batch(_study(seed=5), 8) == _batch(_study(seed=5), 8)
    assert _batch(_study(seed=5), 8) != _batch(_study(seed=6), 8)
