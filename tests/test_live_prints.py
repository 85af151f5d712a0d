"""What `mltrade live` prints: each error and each kill-switch refusal once; its state under one folder.

Run as a user does (a subprocess from a fresh working directory), since in-process the log lines go to
pytest's handlers, not stderr.
"""
import os
import subprocess
import sys
from pathlib import Path

from mltrade.config import load_config
from mltrade.state import STATE_ENV

ROOT = Path(__file__).resolve().parents[1]


def _cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k != STATE_ENV}
    e.update(MPLBACKEND="Agg", PYTHONPATH=str(ROOT), **env)
    return subprocess.run([sys.executable, "-m", "mltrade.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env=e)


def test_a_live_error_is_printed_once_and_kept_in_the_log_file(tmp_path):
    (tmp_path / "c.toml").write_text('[live]\nreplay_start = "2019-03-01"\n')
    p = _cli(tmp_path, "live", "--config", "c.toml", "--speed", "0")
    assert p.returncode == 2, p.stderr[-2000:]
    err = p.stderr + p.stdout
    assert err.count("replay_start") == 1, err          # the `mltrade: error:` line, nothing else
    assert "mltrade: error: live.replay_start: expected a date up to the replayed sample's end 2018-12-31, " \
           "got 2019-03-01" in p.stderr
    assert "None" not in err and "ERROR" not in err
    log = (tmp_path / ".mltrade" / "live" / "mltrade-live.log").read_text()
    assert "ERROR live run failed: live.replay_start" in log


def test_kill_switch_is_said_once_and_state_follows_the_state_dir(tmp_path):
    state = tmp_path / "state"
    p = _cli(tmp_path, "live", "--kill", "manual stop", **{STATE_ENV: str(state)})
    assert p.returncode == 0, p.stderr[-2000:]
    assert (p.stdout + p.stderr).count("kill switch") == 1, p.stdout + p.stderr
    assert (state / "live" / "KILL").read_text().strip().endswith("manual stop")
    p = _cli(tmp_path, "live", "--max-sessions", "2", "--speed", "0", **{STATE_ENV: str(state)})
    assert p.returncode == 0, p.stderr[-2000:]
    both = p.stdout + p.stderr
    assert both.count("kill switch") == 1 and both.count("refused") == 1, both
    line = next(ln for ln in p.stdout.splitlines() if "kill switch" in ln)
    assert line.strip().startswith("REFUSED 2018-06-01 .. 2018-06-04: 2 new positions refused by the risk "
                                   f"limits: kill switch engaged ({state / 'live' / 'KILL'}: ")
    assert "manual stop" in line and "--revive" in line
    # the log file still has every refusal; the journal, lock and log sit in the state directory
    log = (state / "live" / "mltrade-live.log").read_text()
    assert log.count("order refused by risk limits: kill switch engaged") == 2
    assert (state / "live" / "journal.sqlite").exists()
    assert not (tmp_path / "live").exists() and not (tmp_path / ".mltrade").exists()
    # the report a person reads stays in the working directory
    assert list((tmp_path / "reports" / "live").glob("momentum-paper-2018-06-01_2018-06-04-*/report.html"))


def test_state_paths_default_under_the_state_dir_and_config_keys_win(tmp_path, monkeypatch):
    monkeypatch.delenv(STATE_ENV, raising=False)
    cfg = load_config(None)
    lv = cfg["live"]
    assert [lv[k] for k in ("journal_path", "kill_switch_file", "log_file", "screenshots_dir")] == [
        ".mltrade/live/journal.sqlite", ".mltrade/live/KILL", ".mltrade/live/mltrade-live.log",
        ".mltrade/live/screenshots"]
    assert cfg["llm"]["cache_path"] == ".mltrade/llm-cache.sqlite"
    monkeypatch.setenv(STATE_ENV, str(tmp_path / "s"))
    cfg = load_config(None)
    assert cfg["live"]["journal_path"] == str(tmp_path / "s" / "live" / "journal.sqlite")
    assert cfg["llm"]["cache_path"] == str(tmp_path / "s" / "llm-cache.sqlite")
    assert cfg["twelvedata"]["data_dir"] == str(tmp_path / "s" / "data")
    assert cfg["ncp"]["state_dir"] == str(tmp_path / "s")
    conf = tmp_path / "c.toml"
    conf.write_text(f'[live]\njournal_path = "{tmp_path}/j.sqlite"\n'
                    f'[llm]\ncache_path = "{tmp_path}/c.sqlite"\n')
    cfg = load_config(conf)
    assert cfg["live"]["journal_path"] == f"{tmp_path}/j.sqlite"
    assert cfg["llm"]["cache_path"] == f"{tmp_path}/c.sqlite"
    assert cfg["live"]["log_file"] == str(tmp_path / "s" / "live" / "mltrade-live.log")

    from mltrade.live.report import report_dir
    assert report_dir(cfg) == tmp_path / "reports"               # next to a journal set by the user
    cfg["live"]["journal_path"] = str(tmp_path / "s" / "live" / "journal.sqlite")
    assert report_dir(cfg) == Path("reports") / "live"           # in sight, not in the state directory
