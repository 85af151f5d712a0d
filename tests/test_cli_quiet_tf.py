"""TensorFlow's start-up lines and retracing warnings stay off stderr in normal CLI use (issue 13 point 11)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# C++ log lines (I0000 00:00:... file.cc:NN]), absl's pre-init banner, CUDA probing, CPU feature notes
TF_NOISE = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|cudart_stub|cuInit|cpu_feature_guard|oneDNN|"
                      r"rebuild TensorFlow", re.M)

RETRACE = r"""
import tensorflow as tf
@tf.function
def f(x):
    return x * 2
for i in range(8):
    f(tf.constant([float(i)] * (i + 1)))
"""


def _run(code: str, tmp_path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}   # a user's plain shell
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900,
                          cwd=str(tmp_path))


@pytest.mark.slow
def test_cli_command_that_trains_keeps_tensorflow_quiet(tmp_path):
    code = ("import sys\nfrom mltrade.cli import main\n"
            f"rc = main(['train', 'dqn', '--agents', '1', '--candidates', '1', '--steps', '50', '--folds', '1',"
            f" '--sessions', 'day', '--registry', {str(tmp_path / 'reg')!r}, '--quiet'])\n"
            "assert rc == 0 and 'tensorflow' in sys.modules, rc\n" + RETRACE + "print('done')\n")
    out = _run(code, tmp_path)
    assert out.returncode == 0 and out.stdout.strip().endswith("done"), out.stderr[-3000:]
    assert not TF_NOISE.search(out.stderr), out.stderr[-3000:]
    assert "retracing" not in out.stderr


@pytest.mark.slow
def test_cli_quiets_tensorflow_unless_verbose(tmp_path):
    csv = tmp_path / "bars.csv"
    base = ("from mltrade.cli import main\n"
            "assert main([{flags}'data', 'sample', '--out', {csv!r}, '--start', '2018-06-01', '--end', '2018-06-01']) == 0\n"
            + RETRACE)
    quiet = _run(base.format(flags="", csv=str(csv)), tmp_path)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert not TF_NOISE.search(quiet.stderr), quiet.stderr[-3000:]
    assert "retracing" not in quiet.stderr
    loud = _run(base.format(flags="'-v', ", csv=str(csv)), tmp_path)
    assert loud.returncode == 0, loud.stderr[-3000:]
    assert "triggered tf.function retracing" in loud.stderr   # -v shows what the filter hides
