"""The command line behaves the same everywhere (issue 21): -v/-q on either side of the sub-command, a
description and --help for every sub-command, count flags checked, errors that name their file, section and
key, clipped ranges said once, config show/new, data list, optimize show, quiet retries, LLM give-up."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mltrade.cli import _subparsers_of, build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def _all_parsers(parser, prefix="mltrade"):
    for name, _help, p in _subparsers_of(parser):
        yield f"{prefix} {name}", p
        yield from _all_parsers(p, f"{prefix} {name}")


def test_every_subcommand_has_a_description_and_takes_v_and_q():
    parser = build_parser()
    seen = dict(_all_parsers(parser))
    assert {"mltrade backtest", "mltrade report", "mltrade data sample", "mltrade data fetch", "mltrade data list",
            "mltrade config show", "mltrade config new", "mltrade optimize show", "mltrade live"} <= set(seen)
    for name, p in seen.items():
        assert p.description, name
        assert p.prog == name
        opts = p._option_string_actions
        assert {"-v", "--verbose", "-q", "--quiet"} <= set(opts), name
    a = parser.parse_args(["backtest", "-v", "-q"])
    b = parser.parse_args(["-v", "-q", "backtest"])
    assert (a.verbose, a.quiet) == (True, True) and (b.global_verbose, b.global_quiet) == (True, True)


def test_live_status_and_check_have_their_own_help(capsys):
    assert main(["live", "status", "--help"]) == 0
    status = capsys.readouterr().out
    assert status.startswith("usage: mltrade live status") and "kill switch" in status and "--max-sessions" not in status
    assert main(["live", "check", "-h"]) == 0
    check = capsys.readouterr().out
    assert check.startswith("usage: mltrade live check") and "selectors" in check and check != status


@pytest.mark.parametrize("argv, flag", [(["train", "dqn", "--agents", "0"], "--agents"),
                                        (["train", "dqn", "--steps", "-5"], "--steps"),
                                        (["optimize", "strategy", "--folds", "0"], "--folds"),
                                        (["live", "--max-sessions", "0"], "--max-sessions"),
                                        (["optimize", "ncp", "--jobs", "-1"], "--jobs"),
                                        (["optimize", "show", "x", "--top", "0"], "--top")])
def test_count_flags_are_checked_before_anything_runs(argv, flag, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"mltrade: error: {flag}: expected ") and "None" not in err[0]
    assert not list(tmp_path.iterdir())           # nothing written


@pytest.mark.parametrize("body, where", [
    ("[product]\nratio = -1\n", "[product] ratio: expected a positive number"),
    ("[strategy.params]\ndistance = -0.02\n", "[strategy.params] distance: expected a fraction"),
    ("[backtest]\ncash = 0\n", "[backtest] cash: expected a positive amount")])
def test_a_bad_value_names_its_file_section_and_key_once(body, where, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "my.toml"
    cfg.write_text(body)
    assert main(["backtest", "--config", str(cfg)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert lines == [f"mltrade: error: {cfg} {where}" + lines[0].split(where, 1)[1]]
    assert not (tmp_path / "reports").exists()


def test_mid_run_errors_are_located_in_the_users_file(tmp_path):
    from mltrade.cli import _located

    cfg = tmp_path / "c.toml"
    cfg.write_text("[product]\nspread = 0.02\n")
    args = type("A", (), {"config": str(cfg)})()
    assert _located("spread: expected a non-negative number, got -1", args) == \
        f"{cfg} [product] spread: expected a non-negative number, got -1"
    assert _located("ratio: expected a positive number, got 0", args) == "ratio: expected a positive number, got 0"


def test_ranges_beyond_the_data_are_clipped_with_one_line(tmp_path, capsys):
    from mltrade.feeds.source import bars_for
    from mltrade.config import ConfigError
    from mltrade.feeds.loader import write_csv

    bars = bars_for("sample", "2018-12-03", "2019-06-01")
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["mltrade: note: [backtest] end 2019-06-01 outside the data of sample; running its sessions "
                   "2018-12-03 .. 2018-12-31"]
    assert str(bars.index[-1].date()) == "2018-12-31"
    bars_for("sample", "2018-12-03", "2018-12-28")
    assert capsys.readouterr().err == ""            # inside the data: nothing said
    write_csv(bars, tmp_path / "small.csv")
    with pytest.raises(ConfigError) as e:
        bars_for(str(tmp_path / "small.csv"), "2019-01-01", None)
    assert "from 2019-01-01 on" in str(e.value) and "None" not in str(e.value)
    with pytest.raises(ConfigError, match="names no symbol; expected twelvedata:SYMBOL"):
        bars_for("twelvedata:", None, None)


def test_config_new_writes_a_starter_that_loads_and_config_show_says_where(tmp_path, capsys, monkeypatch):
    from mltrade.config import load_config

    monkeypatch.chdir(tmp_path)
    assert main(["config", "new", "mine.toml"]) == 0
    text = (tmp_path / "mine.toml").read_text()
    assert "# ratio = 0.01" in text and "\n[product]\n" in text and "certificates per index point" in text
    assert load_config(tmp_path / "mine.toml") == load_config()      # every key commented out
    (tmp_path / "mine.toml").write_text(text.replace("# ratio = 0.01", "ratio = 0.02"))
    assert load_config(tmp_path / "mine.toml")["product"]["ratio"] == 0.02
    assert main(["config", "new", "mine.toml"]) == 2               # never overwrites
    capsys.readouterr()
    assert main(["config", "show", "--config", "mine.toml", "--section", "product"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[product]"
    ratio = next(line for line in out if line.startswith("ratio"))
    spread = next(line for line in out if line.startswith("spread"))
    assert ratio.split("#")[0].strip() == "ratio = 0.02" and ratio.endswith("# mine.toml")
    assert spread.endswith("# default: mltrade/default_config.toml")
    assert main(["config", "show", "--section", "nope"]) == 2
    assert "valid: backtest" in capsys.readouterr().err
    (tmp_path / "bad.toml").write_text("[product]\nratio = -1\n")
    assert main(["config", "show", "--config", "bad.toml", "--section", "product"]) == 2
    shown = capsys.readouterr()
    assert "ratio = -1" in shown.out and "# bad.toml" in shown.out
    assert shown.err.strip() == "mltrade: error: bad.toml [product] ratio: expected a positive number " \
                                "(certificates per index point), got -1"


def test_data_list_shows_cached_symbols_and_ranges(tmp_path, capsys):
    from mltrade.feeds.source import bars_for
    from mltrade.feeds.cache import cache_path, write_atomic

    bars = bars_for("sample", "2018-06-04", "2018-06-05").tz_localize(None)
    write_atomic(cache_path(tmp_path, "NDX", "5min"), bars, {"covered": [["2018-06-04", "2018-06-06"]]})
    assert main(["data", "list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "sample: NASDAQ Composite daily bars" in out
    line = next(x for x in out.splitlines() if "NDX" in x)
    assert f"NDX 5min: {str(bars.index[0])[:16]} .. {str(bars.index[-1])[:16]}, {len(bars):,} bars" in line
    assert "--data twelvedata:NDX" in line


@pytest.mark.slow
def test_sweep_defaults_to_the_backtest_range_and_optimize_show_reads_it(tmp_path, capsys, monkeypatch):
    from mltrade.commands.optimize_strategy import settings_from
    from mltrade.config import load_config

    args = build_parser().parse_args(["optimize", "strategy"])
    s = settings_from(load_config(), args)
    assert (s.start, s.end) == (load_config()["backtest"]["start"], load_config()["backtest"]["end"])
    monkeypatch.chdir(tmp_path)
    assert main(["optimize", "strategy", "--data", "sample", "--trials", "6", "--batch", "6", "--folds", "2",
                 "--start", "2016-01-04", "--end", "2016-03-31", "--study", "st", "-q"]) == 0
    capsys.readouterr()
    page = (tmp_path / "reports/sweeps/st/report.html").read_text()
    assert "<h1>mltrade sweep: study st: momentum" in page
    assert page.index("Verdict:") < page.index("<h2>")              # the verdict before any section
    assert not re.search(r"\d\.\d{9,}", page.split("<h2>")[0])       # rounded parameters at the top
    n = json.loads((tmp_path / "reports/sweeps/st/summary.json").read_text())["trades"]
    if n == 0:                                                       # a best trial may not trade at all
        assert "Trades (" not in page
    else:
        assert (f"Trades (all {n};" in page) if n <= 50 else (f"Trades (last 50 of {n:,};" in page)
    assert main(["optimize", "show", "st"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("study 'st': 6 trials") and "verdict: Best of 6 trials" in out
    best = json.loads((tmp_path / "reports/sweeps/st/sweep.json").read_text())["best_trial"]
    assert re.search(rf"^  #{best}: ", out, re.M)
    assert main(["optimize", "show", "st", "--trial", str(best)]) == 0
    assert capsys.readouterr().out.startswith(f"trial {best} of study 'st': COMPLETE")
    assert main(["optimize", "show", "st", "--trial", "99"]) == 2
    assert "has trials 0 .. 5, got 99" in capsys.readouterr().err


def test_best_trial_warnings_name_leverage_and_knockouts():
    from mltrade.sweep.verdict import rounded, trial_warnings

    t = pd.DataFrame({"leverage": [25.0, 92.0, 40.0], "exit_reason": ["knockout", "session_end", "stop"]})
    w = trial_warnings(t)
    assert "up to 92× leverage (average 52×)" in w[0] and "1.1 % index move" in w[0]
    assert "1 of its 3 held-out trades (33%) were knocked out" in w[1]
    assert rounded({"distance": 0.7394691457109307, "decision_bar": 17}) == {"distance": 0.7395, "decision_bar": 17}
    from mltrade.sweep.verdict import sweep_lead

    summary = {"significance": {"words": "Best of 24 trials: not distinguishable from luck at 5%."},
               "best_trial": 7, "trials_total": 24, "search_engine": "broker",
               "best_params": {"distance": 0.7394691457109307}, "layout": {"test": ["2017-10-02", "2017-12-29"]},
               "test_best": {"total_return": -0.1785, "trades": 3}, "test_default": {"total_return": 0.01}}
    lead = sweep_lead(summary, t)
    assert lead.index("Verdict:") < lead.index("Best trial 7 of 24 (scored by the broker): distance = 0.7395")
    assert "over 3 trades" in lead and "PBO" not in lead and lead.count("Warning:") == 2
    assert "Probability of backtest overfitting (PBO) 0.62: the chosen trial is more likely than not" in \
        sweep_lead(summary, t, pbo={"pbo": 0.62})


def test_a_failing_download_says_one_line_per_kind_and_gives_up_once(tmp_path):
    cfg = tmp_path / "td.toml"
    cfg.write_text("[twelvedata]\nbackoff_base = 0.05\nmax_retries = 3\ntimeout = 2.0\n")
    env = {**os.environ, "TWELVEDATA_API_KEY": "k", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "mltrade.cli", "data", "fetch", "--symbol", "NDX", "--start",
                           "2024-04-01", "--end", "2024-04-05", "--data-dir", str(tmp_path), "--base-url",
                           "http://127.0.0.1:9", "--config", str(cfg), "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=120, cwd=str(tmp_path))
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 1
    assert len(lines) == 2, lines
    assert lines[0].startswith("mltrade data fetch: TwelveData time_series NDX 5min: connection failed") and \
        "retrying (up to 3 retries" in lines[0]
    assert lines[1].startswith("mltrade data fetch: error: ") and "gave up after 3 retries" in lines[1]
    assert "HTTPConnectionPool" not in proc.stderr and "Traceback" not in proc.stderr


def test_llm_record_mode_gives_up_after_consecutive_failures_and_resumes(tmp_path, monkeypatch):
    from mltrade.llm.cache import LLMGiveUp, ReplayCache, Responder
    from mltrade.llm.client import LLMClient
    from mltrade.llm.overlay import LLMOverlay
    from tests.fake_openai import FakeOpenAI, Reply
    from tests.test_llm_cache import decisions

    monkeypatch.setenv("MLTRADE_TEST_KEY", "sk-test")
    path = tmp_path / "cache.sqlite"
    ok = json.dumps({"action": "SKIP", "reasoning": "choppy"})

    def overlay(url):
        client = LLMClient(base_url=url, model="m", api_key_env="MLTRADE_TEST_KEY", timeout=2.0, max_retries=0)
        return LLMOverlay(Responder("record", client, ReplayCache(str(path)), max_failures=2))

    ds = decisions(5)
    with FakeOpenAI([ok, Reply(status=500, content="down"), Reply(status=500, content="down")]) as srv:
        ov = overlay(srv.base_url)
        ov.review(*ds[0])
        ov.review(*ds[1])              # one failure: the ML decision stands (fallback)
        with pytest.raises(LLMGiveUp, match=r"stopped after 2 consecutive failed API calls.*re-run the same"):
            ov.review(*ds[2])
    assert len(ReplayCache(str(path))) == 1          # the answer is kept, the outage's failures are not
    with FakeOpenAI([ok]) as srv2:
        ov2 = overlay(srv2.base_url)
        for d in ds:
            ov2.review(*d)
        assert srv2.calls == 4                      # resumed: the recorded call replayed, the rest asked
    assert ov2.responder.cache_hits == 1 and len(ReplayCache(str(path))) == 5


def test_replay_cursor_is_one_per_venue():
    from mltrade.live.journal import cursor_key

    assert cursor_key("paper") == "last_session"     # the paper journal keeps its key
    assert len({cursor_key(v) for v in ("paper", "ig", "traderepublic")}) == 3


@pytest.mark.slow
def test_search_workers_keep_tensorflow_quiet_unless_verbose(tmp_path):
    code = ("import multiprocessing as mp, sys\n"
            "def child():\n"
            "    from mltrade.tfquiet import quiet_tensorflow_in_worker\n"
            "    quiet_tensorflow_in_worker()\n"
            "    import tensorflow as tf\n"
            "    tf.constant(1.0) + 1\n"
            "if __name__ == '__main__':\n"
            "    p = mp.get_context('spawn').Process(target=child); p.start(); p.join(); sys.exit(p.exitcode)\n")
    (tmp_path / "w.py").write_text(code)
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "MLTRADE_VERBOSE")}
    env["PYTHONPATH"] = str(ROOT)
    quiet = subprocess.run([sys.executable, "w.py"], capture_output=True, text=True, env=env, cwd=tmp_path,
                           timeout=300)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    from tests.test_cli_quiet_tf import TF_NOISE
    assert not TF_NOISE.search(quiet.stderr), quiet.stderr[-2000:]


def test_matplotlib_and_http_clients_stay_quiet_unless_verbose(capsys):
    import logging

    assert main(["config", "show", "--section", "product"]) == 0
    assert logging.getLogger("matplotlib").level == logging.WARNING      # no "generated new fontManager" line
    assert logging.getLogger("httpx").level == logging.WARNING
    assert os.environ.get("MLTRADE_VERBOSE") != "1"
