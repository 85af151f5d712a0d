"""Real headless Chromium against the local fake IG / Trade Republic pages on 127.0.0.1.

One browser for the whole module. Covers login + 2FA, account list, knock-out levels and the lazy
certificate list (finder step counts against a linear scan), order tickets, confirmations, stops,
positions, closes, and the faults: element missing, slow load, session expired, order rejected, a
crash between submit and confirmation (reconciled at once; a restart adopts and never buys twice), a
venue stop-out found on the next bar and a dead browser. tests/test_live_faults.py has the fault drill.
"""
import logging
import math
import os
import time

import backtrader as bt
import pytest

from mltrade.live.broker import LIVE_CONFIRMATION, SeleniumBroker
from mltrade.live.credentials import Credentials
from mltrade.live.fakevenue import FakeVenue
from mltrade.live.finder import Certificate, KnockoutFinder, ListRowSource
from mltrade.live.journal import OrderJournal
from mltrade.live.risk import RiskGuard, RiskLimits
from mltrade.live.store import SeleniumStore
from mltrade.live.venues.base import ElementMissing, OrderRejected, VenueError, pick_level
from mltrade.products import KnockoutProduct
from tests.helpers import replay_bar

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not os.path.exists("/usr/bin/chromedriver"),
                                 reason="chromium-driver missing")]

INDEX = 15000.0


@pytest.fixture(scope="module")
def venue():
    with FakeVenue(index=INDEX, tr_rows=600) as v:
        yield v


@pytest.fixture
def make_store(venue, browser, tmp_path):
    venue.reset()
    venue.set_index(INDEX)
    browser.delete_all_cookies()

    def make(name, **kw):
        kw.setdefault("timeout", 10.0)          # generous: the machine may be busy; faults pass short ones
        kw.setdefault("confirm_timeout", 10.0)
        kw.setdefault("credentials", Credentials(venue.state.username, venue.state.password))
        return SeleniumStore(name, venue.url, code=lambda: venue.state.code, driver=browser,
                             screenshots_dir=tmp_path / "shots", **kw)
    return make


def bar_data(tmp_path):
    """A feed with one loaded bar, as a strategy would hand it to the broker."""
    return replay_bar(INDEX)


def live_broker(store, tmp_path, journal=None):
    return store.getbroker(journal=journal or OrderJournal(tmp_path / "j.sqlite", store.venue_name),
                           live=True, confirm=LIVE_CONFIRMATION,
                           risk=RiskGuard(RiskLimits(kill_switch_file=str(tmp_path / "KILL"))))


# ---------------------------------------------------------------------------------------------- IG
def test_ig_login_2fa_and_knockout_account(make_store, venue):
    s = make_store("ig")
    s.login()
    assert venue.state.logins["ig"] == 1 and s.logins == 1
    assert s.call(s.venue.cash) == venue.state.cash["ACC-KO"] == 10000.0     # not the CFD account
    bad = make_store("ig", credentials=Credentials(venue.state.username, "wrong-password"))
    s.driver.delete_all_cookies()
    with pytest.raises(VenueError, match="login refused"):
        bad.login()


def test_ig_levels_buy_limit_stop_positions_and_close(make_store, venue):
    s = make_store("ig")
    ig = s.venue
    levels = s.call(ig.levels, 1)
    assert len(levels) == 60 and all(lv["level"] < INDEX for lv in levels)
    assert pick_level([lv["level"] for lv in levels], 1, 14890.0) == 14875.0
    fill = s.call(ig.buy, 1, 14890.0, stake=1000.0, client_ref="T-LONG")
    offer = (INDEX - 14875.0) * 0.01
    assert fill.barrier == 14875.0 and fill.price == pytest.approx(offer)
    assert fill.size == math.floor(1000.0 / offer)
    pos = venue.state.positions[0]
    assert pos["client_ref"] == "T-LONG" and pos["stop"] is None           # the buy places no stop
    assert s.call(ig.place_stop, fill.deal_id, fill.price * 0.71) == pytest.approx(round(offer * 0.71, 2))
    assert pos["stop"] == pytest.approx(round(offer * 0.71, 2))
    venue.set_faults(stop_fail=1)                                       # a refused stop says so at once
    with pytest.raises(OrderRejected, match="stop service unavailable"):
        s.call(ig.place_stop, fill.deal_id, 2.0)
    assert pos["stop"] == pytest.approx(round(offer * 0.71, 2))
    short = s.call(ig.buy, -1, 15110.0, size=100, client_ref="T-SHORT")
    assert short.barrier == 15125.0 and short.size == 100           # lowest level above the wanted one
    cash, open_, closed = s.call(ig.snapshot)
    assert {p.client_ref for p in open_} == {"T-LONG", "T-SHORT"} and closed == []
    lp = next(p for p in open_ if p.client_ref == "T-LONG")
    assert lp.pnl == pytest.approx((lp.bid - lp.entry) * lp.size) and lp.stop == pytest.approx(0.89)
    assert cash == pytest.approx(venue.state.cash["ACC-KO"])
    exit_price = s.call(ig.close, short.deal_id)
    assert exit_price == pytest.approx((15125.0 - INDEX) * 0.01 - 0.01)
    venue.set_index(14870.0)                                           # through the long's barrier
    hist = {h.client_ref: h for h in s.call(ig.history)}
    assert hist["T-SHORT"].reason == "closed" and hist["T-LONG"].reason == "knockout"
    assert hist["T-LONG"].exit == 0.0 and s.call(ig.positions) == []
    with pytest.raises(VenueError, match="at or below"):
        s.call(ig.buy, 1, 10000.0, stake=100.0)


# ------------------------------------------------------------------------------------- Trade Republic
def test_tr_finder_binary_search_on_the_lazy_page(make_store, venue, capsys):
    s = make_store("traderepublic")
    tr = s.venue
    s.login()
    n_before = venue.state.counters.get("tr_products", 0)
    res = s.call(tr.find, 1, 12600.0, INDEX)
    fetch_b = venue.state.counters["tr_products"] - n_before
    tr.linear = True
    n_before = venue.state.counters["tr_products"]
    res_lin = s.call(tr.find, 1, 12600.0, INDEX)
    fetch_l = venue.state.counters["tr_products"] - n_before
    tr.linear = False
    positions = math.ceil(600 / 20)
    with capsys.disabled():
        print(f"\nTR page finder, 600 rows / {positions} scroll positions: binary {res.steps} scroll steps "
              f"({fetch_b} lazy loads), linear {res_lin.steps} steps ({fetch_l} lazy loads)")
    assert res.certificate.isin == res_lin.certificate.isin
    assert res.steps <= math.ceil(math.log2(positions)) + 3
    assert res_lin.steps >= 3 * res.steps and fetch_l > fetch_b
    # the page and a plain list of the same certificates give the same answer
    rows = []
    for i, p in enumerate(venue.state.tr_products["long"]):
        q = venue.quote(p)
        rows.append(Certificate(i, p["isin"], p["level"], q["offer"], q["leverage"] or 0.0))
    ref = KnockoutFinder(ListRowSource(rows), 1).find(12600.0, INDEX)
    assert ref.certificate.isin == res.certificate.isin
    c = res.certificate
    assert c.barrier <= 12600.0 and c.price >= 2.0 and c.leverage <= 45
    short = s.call(tr.find, -1, 16000.0, INDEX)
    assert short.certificate.barrier >= 16000.0


def test_tr_finder_moves_target_past_cheap_rows_on_the_page(make_store, venue):
    from mltrade.live.finder import FinderRules
    rules = FinderRules(scan_rows=1)
    s = make_store("traderepublic", venue_kwargs={"rules": rules})
    rows = venue.state.tr_products["long"]
    i = next(k for k, p in enumerate(rows) if p["ratio"] == 0.001 and k > 100)     # a certificate under 2.00
    res = s.call(s.venue.find, 1, rows[i]["level"], INDEX)
    assert res.moves >= 1 and res.certificate.price >= 2.0
    assert res.target == pytest.approx(rows[i]["level"] - 10 * res.moves)
    certs = [Certificate(k, p["isin"], p["level"], venue.quote(p)["offer"], venue.quote(p)["leverage"] or 0.0)
             for k, p in enumerate(rows)]
    ref = KnockoutFinder(ListRowSource(certs), 1, rules).find(rows[i]["level"], INDEX)
    assert (ref.certificate.isin, ref.moves) == (res.certificate.isin, res.moves)


def test_tr_buy_stop_positions_sell_with_german_numbers(make_store, venue):
    s = make_store("traderepublic")
    tr = s.venue
    fill = s.call(tr.buy, 1, 14000.0, index_price=INDEX, stake=500.0, client_ref="TR-1")
    assert venue.state.positions[0]["stop"] is None
    s.call(tr.place_stop, fill.deal_id, fill.price * 0.71)
    assert fill.barrier <= 14000.0 and fill.size == math.floor(500.0 / fill.price)
    cash, open_, _ = s.call(tr.snapshot)
    assert cash == pytest.approx(venue.state.cash["TR"])
    assert cash == pytest.approx(10000 - fill.size * fill.price)
    assert open_[0].client_ref == "TR-1" and open_[0].barrier == pytest.approx(fill.barrier)
    assert open_[0].stop == pytest.approx(round(fill.price * 0.71, 2))
    assert s.call(tr.place_stop, fill.deal_id, 1234.5) == pytest.approx(1234.5)       # "1.234,50" round trip
    px = s.call(tr.close, fill.deal_id)
    assert px == pytest.approx(fill.price - 0.01)
    assert s.call(tr.history)[0].reason == "closed"


# ---------------------------------------------------------------------------------------------- faults
def test_fault_element_missing_saves_masked_screenshot_and_logs_no_secret(make_store, venue, tmp_path,
                                                                          caplog):
    s = make_store("ig", timeout=3.0)
    caplog.set_level(logging.DEBUG)          # everything, including Selenium's wire log of typed keys
    with caplog.at_level(logging.DEBUG, logger="mltrade.live"):
        s.login()
        venue.set_faults(missing="submit-order")
        with pytest.raises(ElementMissing, match="submit_order"):
            s.call(s.venue.buy, 1, 14800.0, stake=500.0, client_ref="X")
    venue.set_faults(missing=None)
    assert venue.state.orders == []                         # nothing was sent
    png = list((tmp_path / "shots").glob("ig-buy-*.png"))
    html = list((tmp_path / "shots").glob("ig-buy-*.html"))
    assert png and html and png[0].stat().st_size > 1000
    page = html[0].read_text()
    assert "Logged in as ***" in page
    for secret in (venue.state.username, venue.state.password):
        assert secret not in page
        assert all(secret not in r.getMessage() for r in caplog.records)
    assert any("screenshot" in r.getMessage() for r in caplog.records)


def test_fault_slow_load_is_waited_for(make_store, venue):
    s = make_store("ig")
    s.login()
    venue.set_faults(slow_ms=700)
    try:
        t = time.perf_counter()
        assert s.call(s.venue.cash) == 10000.0
        assert time.perf_counter() - t >= 1.4                # page and its API call were both slow
    finally:
        venue.set_faults(slow_ms=None)


def test_keepalive_pings_when_idle(make_store, venue):
    s = make_store("ig", keepalive_s=0.0)
    s.ensure_session()                       # first call logs in
    before = venue.state.counters.get("GET /ig/positions", 0)
    time.sleep(0.05)
    s.ensure_session()                       # idle longer than keepalive_s: one cheap authenticated page
    assert venue.state.counters.get("GET /ig/positions", 0) == before + 1 and s.logins == 1


def test_fault_session_expired_logs_in_again(make_store, venue):
    s = make_store("traderepublic")
    s.login()
    venue.set_faults(session_expired=True)
    assert s.call(s.venue.positions) == []
    assert s.logins == 2 and venue.state.logins["tr"] == 2


def test_fault_order_rejected_reaches_the_strategy_as_rejected(make_store, venue, tmp_path):
    s = make_store("ig")
    broker = live_broker(s, tmp_path)
    broker.start()
    data = bar_data(tmp_path)
    venue.set_faults(reject="Market closed")
    order = broker.buy(None, data, None, product=KnockoutProduct.turbo(1, 14600.0), stake=500.0, stop=0.71)
    assert order.status == bt.Order.Rejected and order.info["reject_reason"] == "Market closed"
    assert broker.journal.get(order.info["ref"]).status == "rejected"
    assert broker.positions == {} and venue.state.positions == []
    statuses = [n.status for n in broker.notifs]
    assert statuses[-1] == bt.Order.Rejected


def test_crash_between_submit_and_confirmation_reconciles_and_never_rebuys(make_store, venue, tmp_path):
    s = make_store("ig", confirm_timeout=3.0)
    journal_path = tmp_path / "j.sqlite"
    b1 = live_broker(s, tmp_path, OrderJournal(journal_path, "ig"))
    b1.start()
    data = bar_data(tmp_path)
    venue.set_faults(crash_after_submit=True)
    o1 = b1.buy(None, data, None, product=KnockoutProduct.turbo(1, 14600.0), stake=500.0, stop=0.71)
    # no confirmation, but the reconciliation right after the time-out finds the venue's position
    ref = o1.info["ref"]
    assert o1.status == bt.Order.Completed and b1.unresolved == []
    assert len(venue.state.orders) == 1 and len(venue.state.positions) == 1
    e = b1.journal.get(ref)
    assert e.status == "filled" and e.info["reconciled"] and e.info["protected"]
    assert venue.state.positions[0]["stop"] == pytest.approx(round(e.price * 0.71, 2))
    # crash: the process dies here. Restart with the same journal file.
    del b1
    b2 = live_broker(s, tmp_path, OrderJournal(journal_path, "ig"))
    b2.start()
    adopted = list(b2.positions.values())
    assert len(adopted) == 1 and adopted[0].size == venue.state.positions[0]["size"]
    o2 = b2.buy(None, data, None, product=KnockoutProduct.turbo(1, 14600.0), stake=500.0)    # replayed
    assert o2.status == bt.Order.Rejected and "duplicate decision" in o2.info["reject_reason"]
    o2b = b2.buy(None, data, None, product=KnockoutProduct.turbo(1, 14600.0), stake=500.0, decision="other")
    assert o2b.status == bt.Order.Rejected and "max_open_positions" in o2b.info["reject_reason"]
    assert len(venue.state.orders) == 1                                        # never a second order
    b2.setdata(data)
    o3 = b2.sell(None, data, None, product=adopted[0].product)
    assert o3.status == bt.Order.Completed and venue.state.positions == []
    assert o3.info["roundtrip"]["exit_reason"] == "signal" and b2.journal.get(ref).status == "closed"
    assert [c.status for c in b2.journal.closes_of(ref)] == ["filled"]


def test_venue_stop_out_is_found_on_the_next_bar(make_store, venue, tmp_path):
    s = make_store("ig")
    b = live_broker(s, tmp_path)
    b.start()
    data = bar_data(tmp_path)
    b.setdata(data)
    o = b.buy(None, data, None, product=KnockoutProduct.turbo(-1, 15400.0), stake=400.0)
    assert o.status == bt.Order.Completed and len(b.positions) == 1
    b.next()                                                   # this bar's reconciliation
    assert b.getcash() == pytest.approx(venue.state.cash["ACC-KO"])
    # the venue stops the position out: found on the next bar, reported as a stop round trip
    deal = venue.state.positions[0]["deal_id"]
    s.call(s.venue.place_stop, deal, 1.50)
    venue.set_index(15260.0)
    polls = venue.state.counters.get("GET /ig/positions", 0)
    b.next()                                                   # same bar again (a live feed waiting): no poll
    assert venue.state.counters.get("GET /ig/positions", 0) == polls and len(b.positions) == 1
    data.next()                                                # the next bar arrives
    b.next()
    assert b.positions == {} and b.roundtrips[-1]["exit_reason"] == "stop"
    assert b.roundtrips[-1]["exit_price"] == pytest.approx(1.50)
    assert b.getcash() == pytest.approx(venue.state.cash["ACC-KO"])
    assert b.journal.realized_pnl_on(data.datetime.date(0)) == pytest.approx(b.roundtrips[-1]["pnl"])


def test_dead_browser_is_replaced_and_the_interrupted_buy_reconciled(venue, tmp_path):
    venue.reset()
    venue.set_index(INDEX)
    s = SeleniumStore("ig", venue.url, credentials=Credentials(venue.state.username, venue.state.password),
                      code=lambda: venue.state.code, timeout=10.0, confirm_timeout=10.0,
                      screenshots_dir=tmp_path / "shots")
    try:
        b = live_broker(s, tmp_path)
        b.start()
        first = s.driver
        first.quit()                                            # the browser crashes
        o = b.buy(None, bar_data(tmp_path), None, product=KnockoutProduct.turbo(1, 14600.0), stake=300.0)
        # reconciled at once in a new browser (new login): the venue never saw it
        assert s.driver is not first and s.logins == 2
        assert o.status == bt.Order.Rejected and b.journal.get(o.info["ref"]).status == "absent"
        assert venue.state.orders == [] and b.unresolved == []
        o2 = b.buy(None, bar_data(tmp_path), None, product=KnockoutProduct.turbo(1, 14600.0), stake=300.0,
                   decision="retry")
        assert o2.status == bt.Order.Completed and len(venue.state.orders) == 1
    finally:
        s.close()
