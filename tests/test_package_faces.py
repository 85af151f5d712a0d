"""Package faces (issue 13 point 12): the documented names import from the packages, lazily."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHECK = r"""
import json, sys
import mltrade, mltrade.feeds, mltrade.strategies, mltrade.brokers
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "keras", "selenium"})
from mltrade.feeds import TwelveDataFeed
from mltrade.strategies import DQNEnsembleStrategy, NCPStrategy
from mltrade.brokers import KnockoutBroker, SeleniumBroker
import backtrader as bt
import mltrade.feeds.twelvedata_feed as tdf, mltrade.strategies.dqn as dqn, mltrade.strategies.ncp as ncp
import mltrade.live.broker as live
from mltrade.strategies.base import KnockoutStrategy
from mltrade.feeds.bars import IndexData
try:
    mltrade.brokers.NoSuchBroker
    missing = "no error"
except AttributeError as exc:
    missing = str(exc)
print(json.dumps({
    "heavy_at_import": heavy,
    "same_objects": [TwelveDataFeed is tdf.TwelveDataFeed, DQNEnsembleStrategy is dqn.DQNEnsembleStrategy,
                     NCPStrategy is ncp.NCPStrategy, SeleniumBroker is live.SeleniumBroker],
    "kinds": [issubclass(TwelveDataFeed, IndexData), issubclass(DQNEnsembleStrategy, KnockoutStrategy),
              issubclass(NCPStrategy, KnockoutStrategy), issubclass(SeleniumBroker, bt.BrokerBase),
              issubclass(KnockoutBroker, bt.BrokerBase)],
    "in_dir": [n in dir(mltrade.feeds) for n in ["TwelveDataFeed"]]
              + [n in dir(mltrade.strategies) for n in ["DQNEnsembleStrategy", "NCPStrategy"]]
              + ["SeleniumBroker" in dir(mltrade.brokers)],
    "in_all": ["TwelveDataFeed" in mltrade.feeds.__all__, "SeleniumBroker" in mltrade.brokers.__all__,
               "NCPStrategy" in mltrade.strategies.__all__],
    "missing": missing,
}))
"""


def test_package_faces_are_lazy_and_resolve():
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, timeout=300,
                         cwd=str(ROOT))
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["heavy_at_import"] == []          # no TensorFlow, Keras or Selenium at package import
    assert all(r["same_objects"]) and all(r["kinds"]) and all(r["in_dir"]) and all(r["in_all"])
    assert "mltrade.brokers" in r["missing"] and "NoSuchBroker" in r["missing"]
