"""Model registry: keeps only models with a better validation metric, atomically; the holdout never chooses."""
import json
import os

import pytest

from mltrade.models.registry import ModelRegistry, date_range, write_json_atomic

VAL = ("2014-01-02", "2014-12-31")
HOLD = ("2015-01-09", "2016-12-30")
R = {"selection_range": VAL, "holdout_range": HOLD}


def _writer(payload):
    def write(d):
        (d / "weights.txt").write_text(payload)
    return write


def test_keeps_only_better_models(tmp_path):
    reg = ModelRegistry(tmp_path)
    assert reg.path("dqn") is None and reg.selection("dqn") is None
    assert reg.offer("dqn", _writer("a"), {"val_return": 0.05, "oos_return": 0.3}, {"k": 1}, "val_return", **R)
    p1 = reg.path("dqn")
    assert (p1 / "weights.txt").read_text() == "a"
    assert reg.metrics("dqn")["val_return"] == 0.05
    assert reg.config("dqn") == {"k": 1}
    assert reg.selection("dqn") == {"metric": "val_return", "value": 0.05, "higher_is_better": True,
                                    "selection_range": list(VAL), "holdout_range": list(HOLD)}
    # worse and equal are rejected, the kept model is untouched, whatever their holdout figure
    assert not reg.offer("dqn", _writer("b"), {"val_return": 0.01, "oos_return": 9.0}, {"k": 2}, "val_return", **R)
    assert not reg.offer("dqn", _writer("b"), {"val_return": 0.05, "oos_return": 9.0}, {"k": 2}, "val_return", **R)
    assert (reg.path("dqn") / "weights.txt").read_text() == "a"
    # better on validation replaces it (even with a worse holdout) and the old version directory is removed
    assert reg.offer("dqn", _writer("c"), {"val_return": 0.07, "oos_return": -0.5}, {"k": 3}, "val_return", **R)
    assert (reg.path("dqn") / "weights.txt").read_text() == "c"
    assert not p1.exists()
    hist = reg.history("dqn")
    assert [h["kept"] for h in hist] == [True, False, False, True]
    assert all(h["selection_range"] == list(VAL) and h["holdout_range"] == list(HOLD) for h in hist)
    versions = [p for p in (tmp_path / "dqn").iterdir() if p.name.startswith("v-")]
    assert len(versions) == 1


def test_selection_reaching_the_holdout_is_refused(tmp_path):
    reg = ModelRegistry(tmp_path)
    with pytest.raises(ValueError, match=r"measured on 2014-01-02 \.\. 2015-01-09, which reaches the holdout "
                                         r"starting 2015-01-09"):
        reg.offer("m", _writer("a"), {"r": 1.0}, {}, "r", selection_range=("2014-01-02", "2015-01-09"),
                  holdout_range=HOLD)
    with pytest.raises(ValueError, match="reaches the holdout"):     # ranked on the holdout itself
        reg.offer("m", _writer("a"), {"r": 1.0}, {}, "r", selection_range=HOLD, holdout_range=HOLD)
    with pytest.raises(ValueError, match="selection_range and holdout_range are required"):
        reg.offer("m", _writer("a"), {"r": 1.0}, {}, "r")
    with pytest.raises(ValueError, match="holdout_range: cannot read 'soon' as a date"):
        reg.offer("m", _writer("a"), {"r": 1.0}, {}, "r", selection_range=VAL, holdout_range=("soon", "2016-01-01"))
    with pytest.raises(ValueError, match="selection_range: last date .* is before first date"):
        reg.offer("m", _writer("a"), {"r": 1.0}, {}, "r", selection_range=("2014-12-31", "2014-01-02"),
                  holdout_range=HOLD)
    assert reg.path("m") is None and reg.history("m") == []
    # the day before the holdout is fine
    assert reg.offer("m", _writer("a"), {"r": 1.0}, {}, "r", selection_range=("2014-01-02", "2015-01-08"),
                     holdout_range=HOLD)


def test_degenerate_models_are_never_kept(tmp_path):
    reg = ModelRegistry(tmp_path)
    assert not reg.offer("m", _writer("a"), {"r": 5.0}, {}, "r", degenerate=True,
                         degenerate_reason="votes long on every validation session", **R)
    assert reg.path("m") is None
    assert not reg.offer("m", _writer("a"), {"r": 5.0}, {}, "r", force=True, degenerate=True, **R)
    assert reg.path("m") is None
    reg.offer("m", _writer("b"), {"r": 0.1}, {}, "r", **R)
    assert not reg.offer("m", _writer("c"), {"r": 9.0}, {}, "r", degenerate=True, degenerate_reason="never trades",
                         **R)
    assert (reg.path("m") / "weights.txt").read_text() == "b"
    hist = reg.history("m")
    assert [h["kept"] for h in hist] == [False, False, True, False]
    assert hist[0]["refused"] == "degenerate: votes long on every validation session" and hist[0]["degenerate"]
    assert hist[3]["refused"] == "degenerate: never trades"


def test_other_ranges_and_legacy_entries_are_not_comparable(tmp_path):
    reg = ModelRegistry(tmp_path)
    # an entry written before selection records: ranked by its holdout figure
    legacy = tmp_path / "m" / "v-old"
    legacy.mkdir(parents=True)
    write_json_atomic(legacy / "metrics.json", {"oos_return": 0.9, "_metric": "oos_return",
                                                "_higher_is_better": True})
    write_json_atomic(legacy / "config.json", {"old": True})
    os.symlink("v-old", tmp_path / "m" / "current")
    assert reg.metrics("m")["oos_return"] == 0.9 and reg.config("m") == {"old": True}
    assert reg.selection("m") is None
    # a validation-ranked candidate replaces it (its 0.9 was a holdout figure: not comparable)
    assert reg.offer("m", _writer("a"), {"val_return": 0.01}, {}, "val_return", **R)
    assert "not comparable" in reg.history("m")[-1]["note"]
    # a candidate on other ranges (e.g. a later data end) is not compared with the kept one either
    later = {"selection_range": ("2015-01-02", "2015-12-31"), "holdout_range": ("2016-01-08", "2017-12-29")}
    assert reg.offer("m", _writer("b"), {"val_return": -0.2}, {}, "val_return", **later)
    # on the same ranges it is compared again
    assert not reg.offer("m", _writer("c"), {"val_return": -0.3}, {}, "val_return", **later)
    assert (reg.path("m") / "weights.txt").read_text() == "b"


def test_lower_is_better_and_force(tmp_path):
    reg = ModelRegistry(tmp_path)
    reg.offer("m", _writer("a"), {"loss": 1.0}, {}, "loss", higher_is_better=False, **R)
    assert reg.offer("m", _writer("b"), {"loss": 0.5}, {}, "loss", higher_is_better=False, **R)
    assert not reg.offer("m", _writer("c"), {"loss": 0.9}, {}, "loss", higher_is_better=False, **R)
    assert reg.offer("m", _writer("d"), {"loss": 9.0}, {}, "loss", higher_is_better=False, force=True, **R)
    assert (reg.path("m") / "weights.txt").read_text() == "d"


def test_failed_write_leaves_kept_model(tmp_path):
    reg = ModelRegistry(tmp_path)
    reg.offer("m", _writer("a"), {"r": 0.0}, {}, "r", **R)

    def boom(d):
        (d / "partial").write_text("x")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        reg.offer("m", boom, {"r": 1.0}, {}, "r", **R)
    assert (reg.path("m") / "weights.txt").read_text() == "a"
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.startswith(".staging")]


def test_bad_metrics_are_clear_errors(tmp_path):
    reg = ModelRegistry(tmp_path)
    with pytest.raises(ValueError, match="no key 'r'"):
        reg.offer("m", _writer("a"), {"x": 1}, {}, "r", **R)
    with pytest.raises(ValueError, match="finite"):
        reg.offer("m", _writer("a"), {"r": float("nan")}, {}, "r", **R)
    with pytest.raises(ValueError, match="plain directory name"):
        reg.offer("../x", _writer("a"), {"r": 1}, {}, "r", **R)
    reg.offer("m", _writer("a"), {"r": 1}, {}, "r", **R)
    with pytest.raises(ValueError, match="ranked by 'r'"):
        reg.offer("m", _writer("a"), {"s": 1}, {}, "s", **R)


def test_malformed_metrics_file_names_file(tmp_path):
    reg = ModelRegistry(tmp_path)
    reg.offer("m", _writer("a"), {"r": 1}, {}, "r", **R)
    (reg.path("m") / "metrics.json").write_text("{bad")
    with pytest.raises(ValueError, match="metrics.json: line 1"):
        reg.metrics("m")


def test_date_range_accepts_timestamps():
    import pandas as pd

    assert date_range((pd.Timestamp("2014-01-02"), "2014-02-03"), "x") == ("2014-01-02", "2014-02-03")
    with pytest.raises(ValueError, match="x: expected a \\(first, last\\) pair"):
        date_range("2014-01-02", "x")


def test_write_json_atomic(tmp_path):
    write_json_atomic(tmp_path / "a" / "b.json", {"x": [1, 2]})
    assert json.loads((tmp_path / "a" / "b.json").read_text()) == {"x": [1, 2]}
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b.json"]


def test_a_warning_travels_with_the_kept_version_and_the_history(tmp_path):
    """A model kept although its validation figure is below its own baselines says so (``warning``)."""
    reg = ModelRegistry(tmp_path)
    why = "validation: the night ensemble's -88.23% is below always-long +12.00% and no-trade +0.00%"
    assert reg.offer("dqn", _writer("a"), {"val_return": -0.88}, {}, "val_return", warning=why, **R)
    assert reg.selection("dqn")["warning"] == why
    assert reg.history("dqn")[-1]["warning"] == why and reg.history("dqn")[-1]["kept"] is True
    assert reg.offer("dqn", _writer("b"), {"val_return": 0.1}, {}, "val_return", **R)
    assert "warning" not in reg.selection("dqn") and "warning" not in reg.history("dqn")[-1]
