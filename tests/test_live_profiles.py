"""Venue profiles (TOML URLs, selectors, number formats, user overrides) and `mltrade live check`."""
import os
import re
from pathlib import Path

import pytest

from mltrade.cli import main
from mltrade.config import load_config
from mltrade.live.profiles import ProfileError, load_profile, user_profile_path

VENUE_CODE = Path(__file__).resolve().parents[1] / "mltrade" / "live" / "venues"
browser = pytest.mark.skipif(not os.path.exists("/usr/bin/chromedriver"), reason="chromium-driver missing")


@pytest.fixture(autouse=True)
def no_user_profiles(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


@pytest.mark.parametrize("venue,module", [("ig", "ig.py"), ("traderepublic", "traderepublic.py")])
def test_every_key_the_driver_uses_is_in_the_shipped_profile(venue, module):
    p = load_profile(venue)
    code = (VENUE_CODE / module).read_text() + (VENUE_CODE / "base.py").read_text()
    used = set(re.findall(r"""sel\(["']([a-z_]+)["']\)""", code))
    used |= set(re.findall(r"""(?:wait|click|text|number|type_into|first_of)\(\[?["']([a-z_]+)["']""", code))
    assert len(used) > 20
    missing = sorted(k for k in used if k not in p.lookup())
    assert missing == []
    assert p.locale == ("en" if venue == "ig" else "de")
    assert p.sel("login_page").endswith("/login") and p.label("long") == ["CALL", "Long"]


def test_user_file_overrides_a_subset_and_names_itself(tmp_path):
    f = tmp_path / "ig.toml"
    f.write_text('[selectors]\nlevel_cell = ".lvl"\n[urls]\nmarkets_page = "/ig/turbos"\n'
                 '[numbers]\nlocale = "de"\n[labels]\naccount_type = "TURBO"\n')
    p = load_profile("ig", f)
    d = load_profile("ig")
    assert p.sel("level_cell") == ".lvl" and p.sel("markets_page") == "/ig/turbos"
    assert p.locale == "de" and p.label("account_type") == "TURBO"
    assert p.sel("bid_cell") == d.sel("bid_cell") and p.check == d.check
    assert p.sources == (d.sources[0], str(f))


def test_user_profile_in_the_config_dir_is_picked_up(tmp_path):
    f = user_profile_path("traderepublic")
    assert f == tmp_path / "xdg" / "mltrade" / "venues" / "traderepublic.toml"
    assert load_profile("tr").sources == (load_profile("traderepublic").sources[0],)
    f.parent.mkdir(parents=True)
    f.write_text('[selectors]\ncert_row = ".row"\n')
    p = load_profile("traderepublic")
    assert p.sel("cert_row") == ".row" and p.sources[-1] == str(f)


@pytest.mark.parametrize("text,msg", [
    ('[selectors]\nlevel_cel = ".x"\n', r"unknown key 'selectors\.level_cel'; did you mean 'level_cell'"),
    ('[selector]\nlevel_cell = ".x"\n', r"unknown key 'selector'; did you mean 'selectors'"),
    ('[selectors]\nlevel_cell = ""\n', r"'selectors\.level_cell' expects a non-empty string"),
    ('[selectors]\nlevel_cell = 3\n', r"'selectors\.level_cell' expects a non-empty string, got 3"),
    ('[labels]\nlong = "CALL"\n', r"'labels\.long' expects a list of non-empty strings"),
    ('[numbers]\nlocale = "fr"\n', r"'numbers\.locale' expects one of \('de', 'en'\)"),
    ('[numbers]\ndecimal = ","\n', r"unknown key 'numbers\.decimal'"),
    ('[[check]]\npage = "nowhere"\n', r"'check\[1\]\.page' expects a key of \[urls\]"),
    ('[[check]]\npage = "markets_page"\nexpect = ["level_cel"]\n', r"check\[1\]\.expect: level_cel"),
    ('[selectors\nx = 1\n', r"invalid TOML: .*line 1"),
])
def test_bad_user_profile_names_file_and_key(tmp_path, text, msg):
    f = tmp_path / "ig.toml"
    f.write_text(text)
    with pytest.raises(ProfileError, match=msg) as e:
        load_profile("ig", f)
    assert str(f) in str(e.value)


def test_missing_profile_file_and_unknown_venue():
    with pytest.raises(ProfileError, match="no such venue profile"):
        load_profile("ig", "/nonexistent/ig.toml")
    with pytest.raises(ProfileError, match="venue"):
        load_profile("degiro")


def test_config_profile_reaches_the_venue_driver(tmp_path):
    from mltrade.live.runner import make_store
    from mltrade.live.store import SeleniumStore
    f = tmp_path / "tr.toml"
    f.write_text('[selectors]\ncert_row = ".renamed"\n[numbers]\nlocale = "en"\n')
    conf = tmp_path / "c.toml"
    conf.write_text(f'[live.profiles]\ntraderepublic = "{f}"\n')
    cfg = load_config(conf)
    try:
        store = make_store("traderepublic", cfg, base_url="http://127.0.0.1:9", code="env:NOPE")
        v = store.venue
        assert v.sel("cert_row") == ".renamed" and v.SELECTORS["cert_row"] == ".renamed"
        assert v.number_locale == "en" and v.profile.sources[-1] == str(f)
    finally:
        for s in list(SeleniumStore._instances.values()):
            s.close()


def test_check_needs_a_venue_with_pages(tmp_path, capsys):
    assert main(["live", "check", "--venue", "paper"]) == 2
    assert "--venue ig|traderepublic" in capsys.readouterr().err


def _conf(tmp_path, profiles=""):
    conf = tmp_path / "c.toml"
    conf.write_text(f'[live]\njournal_path = "{tmp_path}/j.sqlite"\nlog_file = "{tmp_path}/live.log"\n'
                    f'screenshots_dir = "{tmp_path}/shots"\ntimeout = 4.0\n{profiles}')
    return conf


@browser
@pytest.mark.browser
@pytest.mark.slow
def test_live_check_reports_a_broken_selector_on_the_fake_ig_venue(tmp_path, capsys):
    broken = tmp_path / "ig-broken.toml"
    broken.write_text('[selectors]\nlevel_cell = ".lvl-renamed"\n')
    conf = _conf(tmp_path, f'[live.profiles]\nig = "{broken}"\n')
    assert main(["live", "check", "--venue", "ig", "--demo", "--config", str(conf)]) == 1
    out = capsys.readouterr().out
    print(out)
    assert re.search(r"MISSING\s+level_cell\s+\.lvl-renamed\s+\(in level_row\)", out)
    assert re.search(r"ok\s+bid_cell\s+\.bid", out) and "login + 2FA: ok" in out
    assert re.search(r"result: \d+ found, 1 missing, 0 invalid, \d+ unverified; login ok -> FAILED", out)
    assert f"+ {broken}" in out and "number: cash '10,000.00' -> 10000.00 (en)" in out


@browser
@pytest.mark.browser
@pytest.mark.slow
def test_live_check_passes_on_the_fake_trade_republic_venue(tmp_path, capsys):
    conf = _conf(tmp_path)
    assert main(["live", "check", "--venue", "traderepublic", "--demo", "--config", str(conf)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"buy_page\s+/tr/buy\?isin=DE000TRL\d{5}", out)    # ISIN read from the list page
    assert "number: ask" in out and "(de)" in out and " 0 missing" in out and "-> OK" in out
