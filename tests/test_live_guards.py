"""Live guards that need no browser: strict numbers, plausibility, the side of the index, CSS selectors,
validation before anything is touched, damaged journals (never a silent reset), one process per journal,
short-run metrics."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mltrade.cli import main
from mltrade.config import load_config
from mltrade.live.formats import ImplausibleNumber, NumberFormatError, check_plausible, parse_number
from mltrade.live.journal import JournalError, OrderJournal, backup_path, check_journal
from mltrade.live.runlock import JournalLocked, RunLock
from mltrade.live.validate import LiveConfigError, css_syntax_error, validate_live
from mltrade.live.venues.base import VenueError, pick_level

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- numbers
@pytest.mark.parametrize("text,locale", [
    ("10.000,00", "en"), ("3,22", "en"), ("3.22", "de"), ("10,000.00", "de"),      # the other locale
    ("1,552", "en"), ("1.552", "de"), ("3.220", "en"),                             # ambiguous grouping
    ("12,34,567.00", "en"), ("1.2.3", "en"), ("", "en"), ("n/a", "de"), ("1,2345.00", "en"),
])
def test_numbers_in_any_other_shape_are_refused_not_guessed(text, locale):
    with pytest.raises(NumberFormatError) as e:
        parse_number(text, locale, field="ig.cash")
    assert "ig.cash" in str(e.value) and repr(text) in str(e.value) and e.value.text == text


@pytest.mark.parametrize("text,locale,value", [
    ("10,000.00", "en", 10000.0), ("10.000,00", "de", 10000.0), ("2.29", "en", 2.29), ("2,29", "de", 2.29),
    ("−1,234.50 €", "en", -1234.5), ("1.234.567,89 €", "de", 1234567.89), ("15,0", "de", 15.0),
    ("378.00", "en", 378.0), ("0.00", "en", 0.0), ("10000", "en", 10000.0), ("1,234.5", "en", 1234.5),
])
def test_numbers_in_the_profiles_locale_are_read(text, locale, value):
    assert parse_number(text, locale) == value


def test_counts_accept_grouping_but_no_decimals():
    assert parse_number("1,552", "en", integer=True) == 1552
    assert parse_number("1.552", "de", integer=True) == 1552
    for text, loc in (("1.552", "en"), ("1,552", "de"), ("776.0", "en")):
        with pytest.raises(NumberFormatError):
            parse_number(text, loc, integer=True)


def test_plausibility_guard_refuses_jumps_beyond_the_factor():
    check_plausible("cash", 9_500.0, 10_000.0, 4.0)
    check_plausible("bid", 0.0, 3.2, 4.0)                       # a knock-out's 0.00 is not a misread
    check_plausible("cash", 10.0, 10_000.0, 0.0)                # off
    for value, last in ((10.0, 10_000.0), (229.0, 2.29), (378.0, 3.78)):
        with pytest.raises(ImplausibleNumber, match="plausibility_factor 4"):
            check_plausible("price", value, last, 4.0)


def test_pick_level_refuses_the_wrong_side_of_the_index():
    levels = [5975.0, 7000.0, 7150.0, 7300.0]
    assert pick_level(levels, 1, 7197.0, index=7500.0) == 7150.0
    with pytest.raises(VenueError, match="wrong side of the index"):
        pick_level(levels, 1, 7197.0, index=7100.0)             # a long barrier above the index
    with pytest.raises(VenueError, match="wrong side of the index"):
        pick_level(levels, -1, 7197.0, index=7250.0)            # a short barrier below the index
    with pytest.raises(VenueError, match="wrong side of the index"):
        pick_level([7100.0, 7400.0], -1, 7050.0, index=7200.0)  # wanted above? no: below the index
    assert pick_level(levels, -1, 7197.0, index=7100.0) == 7300.0


@pytest.mark.parametrize("css,ok", [
    ("#positions tr.position-row", True), ("td[data-x='1'] > .a:not(.b)", True), ("a, b ~ c + d", True),
    ("tr:nth-child(2n+1) td", True), ("[data-deal-id=\"IG-D1\"] .close-btn", True),
    ("td[[[", False), ("td[", False), ("div >", False), ("..x", False), ("#1a", False), ("a:not()", False),
    ("a)", False), ("", False), ("tr:nth-child(2", False),
])
def test_css_selector_syntax(css, ok):
    assert (css_syntax_error(css) is None) == ok, css_syntax_error(css)


# ---------------------------------------------------------------------------------------------- validation
BAD = [
    ("[strategy.params]\nstake = -500.0\n", "[strategy.params] stake"),
    ("[strategy.params]\nstake_fraction = -0.25\n", "[strategy.params] stake_fraction"),
    ("[strategy.params]\nstop = 1.5\n", "[strategy.params] stop"),
    ("[strategy.params]\nstop = -0.5\n", "[strategy.params] stop"),
    ("[strategy.params]\ndistance = -0.04\n", "[strategy.params] distance"),
    ("[live]\nmax_stake = -100.0\n", "[live] max_stake"),
    ("[live]\nadopt_stop = 1.5\n", "[live] adopt_stop"),
    ("[live]\ntimeout = -1.0\n", "[live] timeout"),
    ("[live]\nmax_open_positions = -1\n", "[live] max_open_positions"),
    ("[live]\nplausibility_factor = 0.5\n", "[live] plausibility_factor"),
    ("[live]\nclose_retries = -2\n", "[live] close_retries"),
]


def _config(tmp_path, extra=""):
    p = tmp_path / "c.toml"
    j = tmp_path / "live"
    p.write_text(textwrap.dedent(f"""\
        [strategy]
        name = "momentum"
        [live]
        journal_path = "{j}/journal.sqlite"
        log_file = "{j}/live.log"
        kill_switch_file = "{j}/KILL"
        screenshots_dir = "{j}/shots"
        report_dir = "{j}/reports"
        """))
    # merge the extra table into the file (TOML forbids a second [live] header)
    if extra.startswith("[live]"):
        p.write_text(p.read_text() + extra[len("[live]\n"):])
    else:
        p.write_text(p.read_text() + extra)
    return p, j


@pytest.mark.parametrize("extra,where", BAD)
def test_bad_live_numbers_fail_before_anything_is_written(tmp_path, capsys, monkeypatch, extra, where):
    monkeypatch.chdir(tmp_path)
    cfg, j = _config(tmp_path, extra)
    rc = main(["live", "--venue", "ig", "--demo", "--config", str(cfg)])
    err = capsys.readouterr()
    assert rc == 2 and str(cfg) in err.err and where in err.err, err.err
    assert "demo: fake" not in err.out                   # the fake venue never started
    assert not j.exists() and not (tmp_path / "live").exists()   # no journal, no log, no screenshot


def test_bad_venue_profile_selector_fails_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prof = tmp_path / "ig.toml"
    prof.write_text('[selectors]\ncash = "td[[["\n')
    cfg, j = _config(tmp_path, f'[live.profiles]\nig = "{prof}"\n')
    rc = main(["live", "--venue", "ig", "--demo", "--config", str(cfg)])
    err = capsys.readouterr().err
    assert rc == 2 and str(prof) in err and "[selectors] cash" in err and "not a valid CSS selector" in err
    assert not j.exists()


def test_validate_accepts_the_shipped_config_and_stop_off():
    cfg = load_config(None)
    validate_live(cfg, "ig")
    cfg["strategy"]["params"]["stop"] = 0
    validate_live(cfg, "traderepublic", strategy_params=cfg["strategy"]["params"])
    cfg["live"]["adopt_stop"] = 1.0
    with pytest.raises(LiveConfigError, match=r"config: \[live\] adopt_stop"):
        validate_live(cfg, "paper")


# ---------------------------------------------------------------------------------------------- journals
def _paper_journal(path):
    from mltrade.live.account import Account
    j = OrderJournal(path, "paper")
    j.begin("buy", direction=1, barrier=7000.0, size=10, price=2.0, status="paper")
    j.close()
    with Account(path, "paper") as a:
        a.open(10_000.0)


def _damage(path, how):
    if how == "empty":
        path.write_bytes(b"")
    elif how == "empty+wal":
        path.write_bytes(b"")
        Path(str(path) + "-wal").write_bytes(b"\0" * 64)
    elif how == "garbage":
        path.write_bytes(os.urandom(8192))
    elif how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2 + 100])
    elif how == "account_row_gone":
        db = sqlite3.connect(path)
        db.execute("DELETE FROM account")
        db.commit()
        db.close()
    elif how == "schema":
        db = sqlite3.connect(path)
        db.execute("DROP TABLE state")
        db.commit()
        db.close()


@pytest.mark.parametrize("how,what", [("empty", "empty"), ("empty+wal", "empty"), ("garbage", "readable"),
                                      ("truncated", "journal"), ("account_row_gone", "inconsistent"),
                                      ("schema", "schema mismatch")])
def test_damaged_journal_is_an_error_with_the_way_out_never_a_silent_reset(tmp_path, capsys, monkeypatch,
                                                                           how, what):
    monkeypatch.chdir(tmp_path)
    cfg, j = _config(tmp_path)
    path = j / "journal.sqlite"
    j.mkdir()
    _paper_journal(path)
    if how == "truncated":          # make the file big enough to cut a page in half
        jj = OrderJournal(path, "paper")
        for i in range(300):
            jj.begin("buy", direction=1, barrier=7000.0 + i, size=1, price=1.0, status="paper", pad="x" * 200)
        jj.close()
        sqlite3.connect(path).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    from mltrade.live.journal import backup_journal
    backup_journal(path)
    _damage(path, how)
    before = path.read_bytes()
    for argv in (["live", "--config", str(cfg)], ["live", "status", "--config", str(cfg)]):
        rc = main(argv)
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and what in lines[0], err
        assert "Traceback" not in err and str(backup_path(path)) in lines[0] and "--reset" in lines[0]
    assert path.read_bytes() == before                  # untouched: nothing reset
    from mltrade.live.runner import preflight
    preflight(load_config(cfg), "momentum", "paper", reset=True)          # --reset: set aside, start anew
    assert not path.exists() and list(j.glob("journal.sqlite.damaged-*"))


def test_missing_journal_is_a_new_account(tmp_path):
    check_journal(tmp_path / "nope.sqlite", "paper")


# ---------------------------------------------------------------------------------------------- one process
HOLDER = """
import sys, time
from mltrade.live.journal import OrderJournal
from mltrade.live.runlock import RunLock
lock = RunLock(sys.argv[1]).acquire()
j = OrderJournal(sys.argv[1], "ig", run_id=lock.run_id, lock=lock)
j.begin("buy", direction=1, barrier=7000.0, stake=500.0, status="submitted", client_ref="")
print(lock.run_id, flush=True)
time.sleep(60)
"""


def test_one_process_per_journal_and_another_runs_pending_order_is_left_alone(tmp_path):
    path = tmp_path / "journal.sqlite"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True,
                             env=env)
    try:
        run = child.stdout.readline().strip()
        assert run.startswith("R")
        with pytest.raises(JournalLocked) as e:
            RunLock(path).acquire()
        msg = str(e.value)
        assert f"pid {child.pid}" in msg and "started 20" in msg and run in msg and "\n" not in msg
        j = OrderJournal(path, "ig")                     # a second broker on the file (no lock): reconcile
        rep = j.reconcile([], [])
        pending = j.unresolved()
        assert [(p.info["run"], p.status) for p in pending] == [(run, "submitted")] and rep.absent == []
        cfg = load_config(None)
        cfg["live"].update(journal_path=str(path), log_file=str(tmp_path / "live.log"),
                           kill_switch_file=str(tmp_path / "KILL"))
        from mltrade.live.runner import run_live
        with pytest.raises(JournalLocked):
            run_live(cfg, "momentum", "paper", "sample", report=False)
        assert not (tmp_path / "live.log").exists()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    lock = RunLock(path).acquire()                       # the OS released the dead holder's lock
    try:
        j2 = OrderJournal(path, "ig", run_id=lock.run_id, lock=lock)
        rep = j2.reconcile([], [])
        assert len(rep.absent) == 1                      # a dead run's order: resolved by the venue
        j2.close()
    finally:
        lock.release()
    j.close()


# ---------------------------------------------------------------------------------------------- metrics
def test_short_run_metrics_never_overflow():
    from mltrade.analyzers.performance import performance
    idx = pd.date_range("2018-06-01 13:30", periods=78, freq="5min", tz="UTC")
    value = np.linspace(10_000.0, 90_000.0, len(idx))                     # 9x in one session
    eq = pd.DataFrame({"value": value, "close": np.linspace(7000, 7100, len(idx)), "in_position": 1.0},
                      index=idx)
    trades = pd.DataFrame({"pnl": [80_000.0], "exit_reason": ["session_end"], "fees": [2.0],
                           "financing": [0.0], "leverage": [20.0]})
    out = performance(eq, trades, 10_000.0)
    assert np.isfinite(out["cagr"]) and out["cagr"] > 1e100
    json.dumps(out, default=str)


# ---------------------------------------------------------------------------------------------- simulation
def test_paper_run_beside_its_simulation_has_a_gap_of_exactly_zero(tmp_path):
    from mltrade.live.runner import run_live
    cfg = load_config(None)
    cfg["live"].update(journal_path=str(tmp_path / "j.sqlite"), log_file=str(tmp_path / "live.log"),
                       kill_switch_file=str(tmp_path / "KILL"), report_dir=str(tmp_path / "reports"))
    res = run_live(cfg, "momentum", "paper", "sample", max_sessions=1)
    gap = json.loads((res.run_dir / "summary.json").read_text())["simulation_gap"]
    assert gap["n_live"] == gap["n_sim"] == len(res.trades) >= 1
    assert gap["total"] == 0.0 and all(r["gap"] == 0.0 for r in gap["trades"])
    for r, t in zip(gap["trades"], res.trades):
        live = (r["size_live"], r["entry_live"], r["exit_live"])
        assert live == (t["size"], t["entry_price"], t["exit_price"])
        assert (r["size_sim"], r["entry_sim"], r["exit_sim"]) == live
    assert "Live beside its simulation" in (res.run_dir / "report.html").read_text()
