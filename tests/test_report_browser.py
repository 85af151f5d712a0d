"""Every kind of report (backtest, DQN, NCP, sweep best trial, live paper) opened in headless Chromium:
every image loads, no console error, no table wider than the page; full-page screenshots are saved as CI
artefacts under $MLTRADE_ARTEFACTS (default reports/ci-screenshots, not committed)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from mltrade.cli import main

pytestmark = pytest.mark.slow

ARTEFACTS = Path(os.environ.get("MLTRADE_ARTEFACTS") or Path(__file__).resolve().parents[1] / "reports" / "ci-screenshots")


def _report_of(out: str) -> Path:
    return Path(re.search(r"report: (\S+report\.html)", out).group(1))


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """One real run of each kind, through the CLI, in a fresh working directory."""
    root = tmp_path_factory.mktemp("browser")
    cwd = os.getcwd()
    os.chdir(root)
    runs = {}
    try:
        import contextlib
        import io

        def cli(argv):
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                assert main(argv) == 0, argv
            return (root / _report_of(buf.getvalue())).resolve()

        runs["backtest"] = cli(["backtest", "--start", "2018-02-01", "--end", "2018-04-30", "--name", "bt", "-q"])
        runs["sweep"] = cli(["optimize", "strategy", "--strategy", "momentum", "--trials", "8", "--start",
                             "2016-01-01", "--end", "2016-03-31", "--folds", "2", "--batch", "8", "--study", "br",
                             "-q", "--out", str(root / "sweeps")])
        (root / "live.toml").write_text(
            "[live]\n" + "".join(f'{k} = "{root / v}"\n' for k, v in (
                ("journal_path", "j.sqlite"), ("log_file", "live.log"), ("kill_switch_file", "KILL"),
                ("screenshots_dir", "shots"))))
        runs["paper"] = cli(["live", "--venue", "paper", "--max-sessions", "2", "--config", str(root / "live.toml")])
        (root / "dqn.toml").write_text(
            '[dqn]\nstart = "2013-06-01"\nend = "2014-03-31"\ntrain_days = 100\nval_days = 40\ntest_days = 30\n'
            f'embargo = 2\ncandidates = 1\nepisode_length = 40\nregistry = "{root / "models"}"\n')
        assert main(["train", "dqn", "--config", str(root / "dqn.toml"), "--agents", "2", "--steps", "40",
                     "--sessions", "day", "-q"]) == 0
        (root / "dqn_bt.toml").write_text(f'[strategy]\nname = "dqn"\n[strategy.params]\nregistry = "{root / "models"}"\n')
        runs["dqn"] = cli(["backtest", "--config", str(root / "dqn_bt.toml"), "--end", "2014-06-30", "--name", "dqn",
                           "-q"])
        runs["ncp"] = _ncp_report(root)
    finally:
        os.chdir(cwd)
    return runs


def _ncp_report(root: Path) -> Path:
    """A tiny NCP model trained for two epochs on a synthetic market, then backtested (as tests/test_ncp_report.py)."""
    from mltrade.backtest import run_backtest
    from mltrade.config import load_config
    from mltrade.feeds.loader import write_csv
    from mltrade.models.ncp.adapt import ATRAdaptation
    from mltrade.models.ncp.artifact import write_artifact
    from mltrade.models.ncp.dataset import PayoffSpec, build_dataset
    from mltrade.models.ncp.model import NCPConfig, build_model
    from mltrade.models.ncp.synthetic import synthetic_daily_history, synthetic_market

    bars = synthetic_market("2017-01-03", 24, planted=True, seed=11)
    hist = synthetic_daily_history(bars, 260, seed=12)
    write_csv(bars, root / "ncp_bars.csv")
    ds = build_dataset(bars, 17, PayoffSpec(), daily_history=hist)
    model = build_model(NCPConfig(n_daily=ds.daily.shape[1], cell="cfc", dense_units=(8,), ltc_units=6,
                                  ltc_units2=5, seed=4), ds.daily, ds.seq)
    model.fit({"daily": ds.daily, "candles": ds.seq}, ds.label, epochs=2, batch_size=8, verbose=0)
    meta = {"settings": {"n_candles": 17, "seq_distance": 0.04, "threshold": 0.5, "objective": "product"},
            "adaptation": ATRAdaptation.identity().to_dict(),
            "metrics": {"holdout": [str(ds.dates[-8]), str(ds.dates[-1])], "train": [str(ds.dates[0]), str(ds.dates[-9])]},
            "config": {"cell": "cfc"}, "feature_names": list(ds.feature_names)}
    write_artifact(model, meta, str(root / "ncp_v1"))
    cfg = load_config()
    cfg["backtest"].update(data=str(root / "ncp_bars.csv"), start="", end="", out=str(root / "reports"))
    cfg["strategy"]["name"] = "ncp"
    cfg["strategy"]["params"] = {"model_path": str(root / "ncp_v1"), "stake_fraction": 0.25}
    res = run_backtest(cfg, run_name="ncp", progress=False, start_at_holdout=True)
    return (res.run_dir / "report.html").resolve()


PAGE_CHECK = """
const imgs = Array.from(document.images);
const page = document.documentElement.clientWidth;
return {
  images: imgs.length,
  broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
  narrow: imgs.filter(i => i.getBoundingClientRect().width < 0.8 * document.body.clientWidth).map(i => i.alt),
  wide_tables: Array.from(document.querySelectorAll('table'))
      .filter(t => t.getBoundingClientRect().right > page + 1).map(t => t.rows[0] ? t.rows[0].innerText.slice(0, 60) : ''),
  scroll: document.documentElement.scrollWidth - page,
  none: (document.body.innerText.match(/.{0,80}\bNone\b.{0,40}/g) || []),
  title: document.title, h1: document.querySelector('h1').innerText,
  lead: document.body.innerText.slice(0, 2000),
};
"""


@pytest.mark.parametrize("kind", ["backtest", "dqn", "ncp", "sweep", "paper"])
def test_report_reads_in_a_browser(reports, browser, kind):
    path = reports[kind]
    browser.set_window_size(1400, 1000)
    browser.get(path.as_uri())
    browser.get_log("browser")     # (drops anything left from the page before)
    browser.refresh()
    r = browser.execute_script(PAGE_CHECK)
    errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1400, min(int(height) + 100, 16000))
    browser.save_screenshot(str(ARTEFACTS / f"report-{kind}.png"))
    assert not errors, errors
    assert r["images"] >= 5 and not r["broken"], r["broken"]
    assert not r["narrow"], r["narrow"]                    # charts use the page's width
    assert not r["wide_tables"] and r["scroll"] <= 0, (r["wide_tables"], r["scroll"])
    assert not r["none"], r["none"]
    assert "Tearsheet" in r["lead"] or "Tearsheet" in browser.page_source
    if kind == "sweep":
        assert r["h1"].startswith("mltrade sweep: ")
        head = r["lead"][:600]
        assert "Verdict:" in head and "distinguishable from luck" in head or "mixed evidence" in head
