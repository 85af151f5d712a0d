"""Journal reconciliation, risk limits, kill switch, credentials and 2FA sources, secret masking."""
import json
import logging
import os
import sys
from datetime import date
from types import SimpleNamespace

import pytest

from mltrade.live.credentials import Credentials, code_source, load_credentials, mask, register_secret
from mltrade.live.journal import OrderJournal
from mltrade.live.risk import RiskGuard, RiskLimits, RiskViolation

D = date(2024, 3, 4)


def vpos(ref, deal="D1", size=10, entry=2.5, barrier=14000.0):
    return SimpleNamespace(client_ref=ref, deal_id=deal, size=size, entry=entry, barrier=barrier)


def test_journal_entry_written_before_and_updated_after(tmp_path):
    j = OrderJournal(tmp_path / "j.sqlite", "ig")
    ref = j.begin("buy", direction=1, barrier=14000.0, stake=500.0, day=D)
    assert j.get(ref).status == "pending" and [e.ref for e in j.unresolved()] == [ref]
    j.update(ref, "filled", price=2.5, size=200, deal_id="D9")
    e = j.get(ref)
    assert (e.status, e.price, e.size, e.deal_id) == ("filled", 2.5, 200, "D9")
    assert j.trades_on(D) == 1 and j.unresolved() == []
    with pytest.raises(ValueError, match="status"):
        j.update(ref, "bogus")
    with pytest.raises(ValueError, match="action"):
        j.begin("sell")


def test_reconcile_after_crash_adopts_instead_of_rebuying(tmp_path):
    path = tmp_path / "j.sqlite"
    j = OrderJournal(path, "ig")
    crashed = j.begin("buy", direction=1, barrier=14000.0, stake=500.0, day=D)     # clicked, then crash
    never = j.begin("buy", direction=-1, barrier=16000.0, stake=500.0, day=D)      # crashed before the click
    j.close()
    j2 = OrderJournal(path, "ig")          # restart: a fresh process opens the same file
    rep = j2.reconcile([vpos(crashed, "D1"), vpos("someone-else", "D2")], [])
    assert rep.filled == [crashed] and rep.absent == [never]
    assert rep.unknown_positions == ["someone-else"]
    assert j2.get(crashed).status == "filled" and j2.get(crashed).deal_id == "D1"
    assert j2.get(never).status == "absent"
    assert [e.ref for e in j2.open_positions()] == [crashed]
    # a later reconcile with the position gone closes it with the venue's reason
    rep2 = j2.reconcile([], [SimpleNamespace(client_ref=crashed, deal_id="D1", exit=0.0, pnl=-500.0,
                                             reason="knockout")])
    assert rep2.closed == [crashed] and j2.get(crashed).info["reason"] == "knockout"
    assert j2.open_positions() == []


def test_journal_state_survives_restart(tmp_path):
    j = OrderJournal(tmp_path / "j.sqlite", "paper")
    j.set_state("last_session", "2018-06-04")
    j.close()
    assert OrderJournal(tmp_path / "j.sqlite", "paper").get_state("last_session") == "2018-06-04"


def test_risk_limits_each_refuse(tmp_path):
    g = RiskGuard(RiskLimits(max_stake=1000, max_leverage=50, daily_loss_limit=300, max_trades_per_day=2,
                             max_open_positions=1, kill_switch_file=str(tmp_path / "KILL")))
    g.check_open(1000, 40, D)
    for kw, msg in [(dict(stake=1001, leverage=10), "max_stake"), (dict(stake=10, leverage=51),
                                                                   "max_leverage"),
                    (dict(stake=10, leverage=10, open_positions=1), "max_open_positions")]:
        with pytest.raises(RiskViolation, match=msg):
            g.check_open(day=D, **kw)
    g.record_open(D)
    g.record_open(D)
    with pytest.raises(RiskViolation, match="max_trades_per_day"):
        g.check_open(10, 10, D)
    other = date(2024, 3, 5)
    g.record_close(other, -300.0)
    with pytest.raises(RiskViolation, match="daily_loss_limit"):
        g.check_open(10, 10, other)
    g.check_open(10, 10, date(2024, 3, 6))


def test_kill_switch_file_blocks_and_revives(tmp_path):
    g = RiskGuard(RiskLimits(kill_switch_file=str(tmp_path / "k" / "KILL")))
    g.check_open(10, 10, D)
    p = g.kill("test")
    assert p.exists() and "test" in p.read_text()
    with pytest.raises(RiskViolation, match="kill switch"):
        g.check_open(10, 10, D)
    g.revive()
    g.check_open(10, 10, D)


def test_risk_from_config_zero_disables():
    lim = RiskLimits.from_config({"max_stake": 0, "max_leverage": 30.0, "max_trades_per_day": 0,
                                  "kill_switch_file": ""})
    assert lim.max_stake is None and lim.max_leverage == 30.0 and lim.max_trades_per_day is None
    assert lim.kill_switch_file is None


def test_credentials_from_env_are_masked_in_logs(caplog):
    env = {"MLTRADE_IG_USERNAME": "alice@example.org", "MLTRADE_IG_PASSWORD": "pw-Sup3rSecret"}
    c = load_credentials("ig", env)
    assert c.username == "alice@example.org" and "Sup3r" not in repr(c)
    log = logging.getLogger("mltrade.live")
    with caplog.at_level(logging.INFO, logger="mltrade.live"):
        log.info("login as %s with %s", c.username, c.password)
        log.error("page said: wrong password pw-Sup3rSecret for alice@example.org")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "alice@example.org" not in text and "Sup3rSecret" not in text and "***" in text
    assert mask("x pw-Sup3rSecret y") == "x *** y"


def test_missing_credentials_name_the_variables():
    with pytest.raises(RuntimeError, match="MLTRADE_TRADEREPUBLIC_USERNAME"):
        load_credentials("traderepublic", {})


def test_code_sources(tmp_path, monkeypatch):
    f = tmp_path / "code.txt"
    f.write_text("424242\n")
    assert code_source(f"file:{f}")() == "424242"
    assert not f.exists()                         # single use
    assert code_source(f"file:{tmp_path / 'none'}", timeout=0.3) is not None
    with pytest.raises(TimeoutError, match="did not appear"):
        code_source(f"file:{tmp_path / 'none'}", timeout=0.3)()
    assert code_source(f"command:{sys.executable} -c \"print(777111)\"")() == "777111"
    monkeypatch.setenv("MY_2FA", "135790")
    assert code_source("env:MY_2FA")() == "135790"
    with pytest.raises(ValueError, match="prompt \\| file"):
        code_source("sms")


def test_register_secret_ignores_short_values():
    register_secret("ab")
    assert mask("ab cd") == "ab cd"
    register_secret(None)
    assert Credentials("u1x", "p1x").__str__() == "Credentials(username=***, password=***)"


def test_store_singleton_and_browser_start_errors(tmp_path):
    from mltrade.live.store import SeleniumStore, venue_class
    a = SeleniumStore.instance("ig", "http://127.0.0.1:9/", code="env:NOPE")
    assert SeleniumStore.instance("ig", "http://127.0.0.1:9") is a
    assert SeleniumStore.instance("traderepublic", "http://127.0.0.1:9") is not a
    for s in list(SeleniumStore._instances.values()):
        s.close()
    assert SeleniumStore._instances == {}
    with pytest.raises(ValueError, match="'ig' or 'traderepublic'"):
        venue_class("degiro")
    with pytest.raises(RuntimeError, match="driver_path.*/nonexistent"):
        SeleniumStore("ig", "http://127.0.0.1:9", driver_path="/nonexistent")._start_browser()
    try:
        import undetected_chromedriver  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="undetected-chromedriver"):
            SeleniumStore("ig", "http://127.0.0.1:9", undetected=True)._start_browser()


def test_daily_loss_survives_restart_through_the_journal(tmp_path):
    j = OrderJournal(tmp_path / "j.sqlite", "ig")
    buy = j.begin("buy", direction=1, day=D)
    j.update(buy, "closed")
    close = j.begin("close", parent=buy, day=D)
    j.update(close, "filled", price=0.0, pnl=-400.0, reason="knockout")
    j.close()
    j2 = OrderJournal(tmp_path / "j.sqlite", "ig")
    assert j2.realized_pnl_on(D) == -400.0 and j2.trades_on(D) == 1
    g = RiskGuard(RiskLimits(daily_loss_limit=300, kill_switch_file=None))     # a fresh process: no memory
    with pytest.raises(RiskViolation, match="daily_loss_limit"):
        g.check_open(10, 10, D, pnl_today=j2.realized_pnl_on(D))


# ------------------------------------------------------------------ opt-in, feeds, secrets at -v, 2FA
def _conf(tmp_path, extra=""):
    conf = tmp_path / "c.toml"
    conf.write_text(f'[live]\njournal_path = "{tmp_path}/j.sqlite"\nlog_file = "{tmp_path}/live.log"\n'
                    f'kill_switch_file = "{tmp_path}/KILL"\nscreenshots_dir = "{tmp_path}/shots"\n{extra}')
    return conf


def test_config_alone_never_places_live_orders(tmp_path, capsys):
    from mltrade.cli import main
    from mltrade.live.broker import LIVE_CONFIRMATION
    conf = _conf(tmp_path, f'venue = "ig"\nlive = true\nconfirm = "{LIVE_CONFIRMATION}"\n')
    assert main(["live", "--max-sessions", "1", "--config", str(conf)]) == 0
    cap = capsys.readouterr()
    assert "momentum on ig (dry run)" in cap.out and "LIVE" not in cap.out
    assert "no effect without --live" in cap.err
    j = OrderJournal(tmp_path / "j.sqlite", "ig")
    assert j.entries() and {e.status for e in j.entries()} == {"dry_run"}


def test_live_refuses_the_replayed_sample_feed_and_paper(tmp_path, capsys):
    from mltrade.cli import main
    from mltrade.config import load_config
    from mltrade.live.broker import LIVE_CONFIRMATION
    from mltrade.live.runner import run_live
    conf = _conf(tmp_path, f'confirm = "{LIVE_CONFIRMATION}"\n')
    assert main(["live", "--venue", "ig", "--live", "--config", str(conf)]) == 2      # default --feed sample
    assert "--live refuses the replayed sample feed" in capsys.readouterr().err
    assert main(["live", "--venue", "paper", "--live", "--config", str(conf)]) == 2
    assert "paper trading needs no --live" in capsys.readouterr().err
    assert not (tmp_path / "j.sqlite").exists()                     # refused before anything was opened
    cfg = load_config(conf)
    with pytest.raises(ValueError, match="need a live feed"):       # the library refuses it too
        run_live(cfg, "momentum", "traderepublic", "sample", live=True)
    with pytest.raises(ValueError, match="need a live feed"):
        run_live(cfg, "momentum", "ig", "sample", live=True, base_url="https://ig.example.org")


def spelled(secret: str, gap: str) -> "re.Pattern":
    """``secret`` with up to a few ``gap`` characters between its characters (one per list item)."""
    import re
    return re.compile(gap.join(re.escape(c) for c in secret))


def test_mask_catches_secrets_typed_one_character_per_item():
    register_secret("pw-Zq9!long")
    chars = list("pw-Zq9!long")
    line = (f"POST /session/1/element/2/value {{'text': 'pw-Zq9!long', 'value': {chars!r}}} "
            f"and JSON {json.dumps(chars)}")
    out = mask(line)
    assert "pw-Zq9!long" not in out and not spelled("pw-Zq9!long", r"[^A-Za-z0-9]{0,6}").search(out)
    assert mask("price 15,234.50 at 10:12") == "price 15,234.50 at 10:12"


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/usr/bin/chromedriver"), reason="chromium-driver missing")
def test_wrong_2fa_code_says_so(tmp_path):
    from mltrade.live.fakevenue import FakeVenue
    from mltrade.live.store import SeleniumStore
    from mltrade.live.venues.base import SessionExpired, TwoFactorRefused
    with FakeVenue() as v:
        s = SeleniumStore("ig", v.url, credentials=Credentials(v.state.username, v.state.password),
                          code=lambda: "987650", screenshots_dir=tmp_path / "shots", timeout=5.0)
        try:
            with pytest.raises(TwoFactorRefused, match="2FA code was refused.*Wrong code") as e:
                s.login()
            assert not isinstance(e.value, SessionExpired) and "987650" not in str(e.value)
            shot = next((tmp_path / "shots").glob("ig-login-*.html")).read_text()
            assert "987650" not in shot                          # the typed code is masked in the page dump
            s._code = lambda: v.state.code                       # the right code then logs in
            s.login()
            assert v.state.logins["ig"] == 1
        finally:
            s.close()
