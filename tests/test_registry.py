"""Model registry: keeps only better out-of-sample models, atomically."""
import json

import pytest

from mltrade.models.registry import ModelRegistry, write_json_atomic


def _writer(payload):
    def write(d):
        (d / "weights.txt").write_text(payload)
    return write


def test_keeps_only_better_models(tmp_path):
    reg = ModelRegistry(tmp_path)
    assert reg.path("dqn") is None
    assert reg.offer("dqn", _writer("a"), {"oos_return": 0.05}, {"k": 1}, "oos_return")
    p1 = reg.path("dqn")
    assert (p1 / "weights.txt").read_text() == "a"
    assert reg.metrics("dqn")["oos_return"] == 0.05
    assert reg.config("dqn") == {"k": 1}
    # worse and equal are rejected, the kept model is untouched
    assert not reg.offer("dqn", _writer("b"), {"oos_return": 0.01}, {"k": 2}, "oos_return")
    assert not reg.offer("dqn", _writer("b"), {"oos_return": 0.05}, {"k": 2}, "oos_return")
    assert (reg.path("dqn") / "weights.txt").read_text() == "a"
    # better replaces it and the old version directory is removed
    assert reg.offer("dqn", _writer("c"), {"oos_return": 0.07}, {"k": 3}, "oos_return")
    assert (reg.path("dqn") / "weights.txt").read_text() == "c"
    assert not p1.exists()
    hist = reg.history("dqn")
    assert [h["kept"] for h in hist] == [True, False, False, True]
    versions = [p for p in (tmp_path / "dqn").iterdir() if p.name.startswith("v-")]
    assert len(versions) == 1


def test_lower_is_better_and_force(tmp_path):
    reg = ModelRegistry(tmp_path)
    reg.offer("m", _writer("a"), {"loss": 1.0}, {}, "loss", higher_is_better=False)
    assert reg.offer("m", _writer("b"), {"loss": 0.5}, {}, "loss", higher_is_better=False)
    assert not reg.offer("m", _writer("c"), {"loss": 0.9}, {}, "loss", higher_is_better=False)
    assert reg.offer("m", _writer("d"), {"loss": 9.0}, {}, "loss", higher_is_better=False, force=True)
    assert (reg.path("m") / "weights.txt").read_text() == "d"


def test_failed_write_leaves_kept_model(tmp_path):
    reg = ModelRegistry(tmp_path)
    reg.offer("m", _writer("a"), {"r": 0.0}, {}, "r")

    def boom(d):
        (d / "partial").write_text("x")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        reg.offer("m", boom, {"r": 1.0}, {}, "r")
    assert (reg.path("m") / "weights.txt").read_text() == "a"
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.startswith(".staging")]


def test_bad_metrics_are_clear_errors(tmp_path):
    reg = ModelRegistry(tmp_path)
    with pytest.raises(ValueError, match="no key 'r'"):
        reg.offer("m", _writer("a"), {"x": 1}, {}, "r")
    with pytest.raises(ValueError, match="finite"):
        reg.offer("m", _writer("a"), {"r": float("nan")}, {}, "r")
    with pytest.raises(ValueError, match="plain directory name"):
        reg.offer("../x", _writer("a"), {"r": 1}, {}, "r")
    reg.offer("m", _writer("a"), {"r": 1}, {}, "r")
    with pytest.raises(ValueError, match="ranked by 'r'"):
        reg.offer("m", _writer("a"), {"s": 1}, {}, "s")


def test_malformed_metrics_file_names_file(tmp_path):
    reg = ModelRegistry(tmp_path)
    reg.offer("m", _writer("a"), {"r": 1}, {}, "r")
    (reg.path("m") / "metrics.json").write_text("{bad")
    with pytest.raises(ValueError, match="metrics.json: line 1"):
        reg.metrics("m")


def test_write_json_atomic(tmp_path):
    write_json_atomic(tmp_path / "a" / "b.json", {"x": [1, 2]})
    assert json.loads((tmp_path / "a" / "b.json").read_text()) == {"x": [1, 2]}
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b.json"]
