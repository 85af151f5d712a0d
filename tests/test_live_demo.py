"""`mltrade -v live --venue ig --demo --live`: the whole live loop against the local fake venue in Chromium,
run as a user would (a subprocess at debug verbosity) and scanned for credentials in every output."""
import os
import subprocess
import sys

import pytest

from mltrade.live.fakevenue import VenueState
from mltrade.live.journal import OrderJournal, cursor_key
from tests.test_live_safety import spelled

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not os.path.exists("/usr/bin/chromedriver"),
                                 reason="chromium-driver missing")]


def test_cli_demo_trades_one_session_and_no_secret_reaches_any_output(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text(f'[live]\njournal_path = "{tmp_path}/j.sqlite"\nlog_file = "{tmp_path}/live.log"\n'
                    f'kill_switch_file = "{tmp_path}/KILL"\nscreenshots_dir = "{tmp_path}/shots"\n')
    p = subprocess.run([sys.executable, "-m", "mltrade.cli", "-v", "live", "--venue", "ig", "--demo",
                        "--live", "--max-sessions", "1", "--config", str(conf)],
                       capture_output=True, text=True, timeout=600, env=dict(os.environ, MPLBACKEND="Agg"))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "momentum on ig (LIVE): sessions 2018-06-01; 1 round trips" in p.stdout
    j = OrderJournal(tmp_path / "j.sqlite", "ig")
    buys, closes = j.entries("buy"), j.entries("close")
    assert [e.status for e in buys] == ["closed"] and [e.status for e in closes] == ["filled"]
    assert buys[0].deal_id and buys[0].info["reason"] == "session_end"
    assert j.get_state(cursor_key("ig")) == "2018-06-01" and j.unresolved() == []
    log = (tmp_path / "live.log").read_text()
    assert "ig: submitting" in log and "session 2018-06-01 finished" in log
    assert not list((tmp_path / "shots").glob("*.png"))          # no failure on the way
    assert list((tmp_path / "reports").glob("momentum-ig-2018-06-01_2018-06-01-*/report.html"))
    # -v shows Selenium's wire log: the typing is there, but masked
    assert "/value" in p.stderr and "'text': '***'" in p.stderr
    texts = {"stdout": p.stdout, "stderr": p.stderr}
    for f in tmp_path.rglob("*"):
        if f.is_file():
            texts[str(f)] = f.read_bytes().decode("latin-1")
    st = VenueState()
    for secret, gap in ((st.username, r"[^A-Za-z0-9]{0,6}"), (st.password, r"[^A-Za-z0-9]{0,6}"),
                        (st.code, r"[\s'\",\[\]]{0,6}")):
        for name, text in texts.items():
            assert secret not in text, f"{secret!r} in {name}"
            assert not spelled(secret, gap).search(text), f"{secret!r} spelled out in {name}"
