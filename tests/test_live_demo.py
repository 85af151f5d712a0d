"""`mltrade live --venue ig --demo --live`: the whole live loop against the local fake venue in Chromium."""
import os

import pytest

from mltrade.cli import main
from mltrade.live.journal import OrderJournal

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not os.path.exists("/usr/bin/chromedriver"),
                                 reason="chromium-driver missing")]


def test_cli_demo_trades_one_session_on_the_fake_ig_venue(tmp_path, capsys):
    conf = tmp_path / "c.toml"
    conf.write_text(f'[live]\njournal_path = "{tmp_path}/j.sqlite"\nlog_file = "{tmp_path}/live.log"\n'
                    f'kill_switch_file = "{tmp_path}/KILL"\nscreenshots_dir = "{tmp_path}/shots"\n')
    assert main(["live", "--venue", "ig", "--demo", "--live", "--max-sessions", "1", "--config",
                 str(conf)]) == 0
    out = capsys.readouterr().out
    assert "momentum on ig (LIVE): sessions 2018-06-01; 1 round trips" in out
    j = OrderJournal(tmp_path / "j.sqlite", "ig")
    buys, closes = j.entries("buy"), j.entries("close")
    assert [e.status for e in buys] == ["closed"] and [e.status for e in closes] == ["filled"]
    assert buys[0].deal_id and buys[0].info["reason"] == "session_end"
    assert j.get_state("last_session") == "2018-06-01" and j.unresolved() == []
    log = (tmp_path / "live.log").read_text()
    assert "ig: submitting" in log and "session 2018-06-01 finished" in log
    assert "demo@example.com" not in log and "s3cret-pass" not in log
    assert not list((tmp_path / "shots").glob("*.png"))          # no failure on the way
