"""Order journal without a browser: decision keys, reconciliation cases, atomic closes, schema upgrade."""
import sqlite3
from datetime import date
from types import SimpleNamespace

import pytest

from mltrade.live.journal import DuplicateDecision, OrderJournal

D = date(2018, 6, 1)


def vpos(ref, deal, size=100, entry=4.0, barrier=14600.0, bid=3.9, stop=None):
    return SimpleNamespace(client_ref=ref, deal_id=deal, size=size, entry=entry, barrier=barrier, bid=bid,
                           stop=stop, product_id="IGC016")


def vclosed(ref, deal, exit_, pnl, reason, size=100):
    return SimpleNamespace(client_ref=ref, deal_id=deal, size=size, exit=exit_, pnl=pnl, reason=reason)


def test_a_decision_key_takes_one_order_also_after_a_restart(tmp_path):
    path = tmp_path / "j.sqlite"
    j = OrderJournal(path, "ig")
    ref = j.begin("buy", direction=1, barrier=14600.0, day=D, decision="Momentum|2018-06-01|10:55")
    with pytest.raises(DuplicateDecision) as e:
        j.begin("buy", direction=1, barrier=14600.0, day=D, decision="Momentum|2018-06-01|10:55")
    assert e.value.existing.ref == ref
    j.update(ref, "absent")                     # even a buy the venue never executed keeps its key
    j.close()
    j2 = OrderJournal(path, "ig")
    with pytest.raises(DuplicateDecision, match="already has order"):
        j2.begin("buy", direction=1, barrier=14600.0, day=D, decision="Momentum|2018-06-01|10:55")
    assert j2.by_decision("Momentum|2018-06-01|10:55").ref == ref
    j2.begin("buy", direction=1, barrier=14600.0, day=D, decision="Momentum|2018-06-01|11:00")
    j2.begin("buy", direction=1, barrier=14600.0, day=D)            # no key (paper rows): no constraint
    j2.begin("buy", direction=1, barrier=14600.0, day=D)
    other = OrderJournal(path, "traderepublic")                      # keys are per venue
    other.begin("buy", direction=1, barrier=14600.0, day=D, decision="Momentum|2018-06-01|10:55")
    assert len(j2.entries("buy")) == 4


def test_a_journal_from_before_decision_keys_is_upgraded(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""CREATE TABLE orders (ref TEXT PRIMARY KEY, venue TEXT NOT NULL, action TEXT NOT NULL,
        status TEXT NOT NULL, direction INTEGER, barrier REAL, size REAL, price REAL, stake REAL,
        deal_id TEXT,
        parent TEXT, day TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL,
        info TEXT NOT NULL DEFAULT '{}');
        INSERT INTO orders VALUES ('OLD1', 'ig', 'buy', 'filled', 1, 14600, 100, 4.0, NULL, 'D1', NULL,
        '2018-06-01', 0, 0, '{}');""")
    db.commit()
    db.close()
    j = OrderJournal(path, "ig")
    assert j.get("OLD1").decision is None and [e.ref for e in j.open_positions()] == ["OLD1"]
    j.begin("buy", day=D, decision="k")
    with pytest.raises(DuplicateDecision):
        j.begin("buy", day=D, decision="k")


def test_reconcile_late_fill_venue_stop_and_unknown_position(tmp_path):
    j = OrderJournal(tmp_path / "j.sqlite", "ig")
    late = j.begin("buy", direction=1, barrier=14600.0, day=D, decision="a")
    j.update(late, "absent")                                  # given up after the time-out...
    held = j.begin("buy", direction=1, barrier=14600.0, day=D, decision="b")
    j.update(held, "filled", deal_id="D2", size=100, price=4.0)
    rep = j.reconcile([vpos(late, "D1"), vpos("", "D9")],     # ...the venue filled it; D2 was stopped out
                      [vclosed(held, "D2", 2.84, -116.0, "stop")], day=date(2018, 6, 4))
    assert rep.late == [late] and j.get(late).status == "filled" and j.get(late).info["late"]
    assert rep.closed == [held] and j.get(held).status == "closed" and j.get(held).info["reason"] == "stop"
    (c,) = j.closes_of(held)
    assert (c.status, c.price, c.info["pnl"], c.day) == ("filled", 2.84, -116.0, "2018-06-04")
    assert j.realized_pnl_on(date(2018, 6, 4)) == -116.0
    assert [p.deal_id for p in rep.unknown] == ["D9"] and rep.unknown_positions == ["D9"]
    assert [e.ref for e in j.open_positions()] == [late]
    rep2 = j.reconcile([vpos(late, "D1")], [vclosed(held, "D2", 2.84, -116.0, "stop")])
    assert not rep2.changed and len(j.closes_of(held)) == 1          # idempotent: booked once


def test_reconcile_position_gone_without_history_uses_the_last_bid(tmp_path):
    j = OrderJournal(tmp_path / "j.sqlite", "ig")
    ref = j.begin("buy", direction=1, barrier=14600.0, day=D)
    j.update(ref, "filled", deal_id="D1", size=100, price=4.0)
    j.reconcile([vpos(ref, "D1", bid=3.5)], [])
    assert j.get(ref).info["last_bid"] == 3.5
    rep = j.reconcile([], [])
    assert rep.closed == [ref] and j.get(ref).info["reason"] == "venue_gone"
    (c,) = j.closes_of(ref)
    assert c.price == 3.5 and c.info["pnl"] == pytest.approx(-50.0) and c.day == D.isoformat()


def test_reconcile_unconfirmed_close_and_pending_buy(tmp_path):
    j = OrderJournal(tmp_path / "j.sqlite", "ig")
    a = j.begin("buy", direction=1, barrier=14600.0, day=D)
    j.update(a, "filled", deal_id="DA", size=10, price=4.0)
    b = j.begin("buy", direction=1, barrier=14600.0, day=D)
    j.update(b, "filled", deal_id="DB", size=10, price=4.0)
    ca = j.begin("close", parent=a, deal_id="DA", day=D, reason="signal")
    cb = j.begin("close", parent=b, deal_id="DB", day=D, reason="session_end")
    p = j.begin("buy", direction=-1, barrier=15400.0, day=D)
    rep = j.reconcile([vpos(b, "DB")], [vclosed(a, "DA", 4.2, 2.0, "closed")], keep_pending=[p])
    assert rep.close_filled == [ca] and j.get(ca).status == "filled" and j.get(a).status == "closed"
    assert j.get(a).info["reason"] == "signal" and j.get(ca).price == 4.2
    assert rep.close_absent == [cb] and j.get(cb).status == "absent" and j.get(b).status == "filled"
    assert rep.pending == [p] and j.get(p).status == "pending"       # just timed out: still in flight
    rep2 = j.reconcile([vpos(b, "DB")], [])
    assert rep2.absent == [p] and j.get(p).status == "absent"


def test_close_position_is_one_transaction(tmp_path):
    j = OrderJournal(tmp_path / "j.sqlite", "ig")
    ref = j.begin("buy", direction=1, barrier=14600.0, day=D)
    j.update(ref, "filled", deal_id="D1", size=10, price=4.0)
    with pytest.raises(KeyError):                            # the close row is unknown: nothing changes
        j.close_position(ref, close_ref="NOPE", price=3.0, pnl=None, reason="stop")
    assert j.get(ref).status == "filled" and j.closes_of(ref) == []
    cref = j.close_position(ref, price=3.0, pnl=None, reason="stop", day=D)
    assert j.get(cref).info["pnl"] == pytest.approx(-10.0) and j.get(ref).info["close_ref"] == cref


def test_dry_run_broker_refuses_a_replayed_decision(tmp_path):
    import backtrader as bt

    from mltrade.feeds.sample import sample_intraday
    from mltrade.live.broker import SeleniumBroker, decision_key
    from mltrade.live.scheduler import ReplayData
    from mltrade.products import KnockoutProduct

    class Momo:
        pass

    d = ReplayData(dataframe=sample_intraday("2018-06-01", "2018-06-01"), exchange="XNAS", interval=5)
    d._env = bt.Cerebro()
    d._start()
    d.next()
    path = tmp_path / "j.sqlite"
    b = SeleniumBroker(journal=OrderJournal(path, "dry"))
    product = KnockoutProduct.turbo(1, float(d.close[0]) * 0.96)
    o1 = b.buy(Momo(), d, None, product=product, stake=500.0)
    key = decision_key(Momo(), d)
    assert o1.status == bt.Order.Completed and o1.info["decision"] == key
    assert key == f"Momo|2018-06-01|{d.datetime.datetime(0).isoformat()}"
    b2 = SeleniumBroker(journal=OrderJournal(path, "dry"))          # a restart replays the same bar
    o2 = b2.buy(Momo(), d, None, product=product.copy(), stake=500.0)
    assert o2.status == bt.Order.Rejected and "duplicate decision" in o2.info["reject_reason"]
    d.next()                                                        # the next bar is a new decision
    o3 = b2.buy(Momo(), d, None, product=product.copy(), stake=500.0)
    assert o3.status == bt.Order.Completed
    assert [e.decision for e in b2.journal.entries("buy")] == [key, decision_key(Momo(), d)]
