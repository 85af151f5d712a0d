"""Paper mode end to end on the replayed sample, restarts, kill switch, CLI, and the dry-run broker."""
import re
from pathlib import Path

import backtrader as bt
import pytest

from mltrade.cli import main
from mltrade.config import load_config
from mltrade.feeds.sample import sample_intraday
from mltrade.live.account import Account
from mltrade.live.broker import SeleniumBroker
from mltrade.live.journal import OrderJournal
from mltrade.live.notify import Notifier
from mltrade.live.risk import RiskGuard, RiskLimits
from mltrade.live.runner import live_strategy, run_live
from mltrade.live.scheduler import ReplayData, next_sessions, wait_until_open
from mltrade.strategies.base import KnockoutStrategy
from mltrade.strategies.reference import IntradayMomentum
from mltrade.strategies.registry import register_strategy


@pytest.fixture
def cfg(tmp_path):
    c = load_config(None)
    c["live"].update(journal_path=str(tmp_path / "j.sqlite"), log_file=str(tmp_path / "live.log"),
                     kill_switch_file=str(tmp_path / "KILL"), screenshots_dir=str(tmp_path / "shots"))
    return c


def test_paper_trades_sample_end_to_end_and_resumes_after_restart(cfg, tmp_path):
    r1 = run_live(cfg, "momentum", "paper", "sample", max_sessions=2)
    assert r1.sessions == ["2018-06-01", "2018-06-04"]
    assert len(r1.trades) == 2
    assert {t["exit_reason"] for t in r1.trades} <= {"session_end", "stop", "knockout"}
    assert all(t["invested"] <= cfg["live"]["max_stake"] + 1e-6 for t in r1.trades)
    assert r1.value == pytest.approx(10_000 + sum(t["pnl"] for t in r1.trades))
    # a restart continues with the next sessions instead of trading the same ones again
    r2 = run_live(cfg, "momentum", "paper", "sample", max_sessions=1)
    assert r2.sessions == ["2018-06-05"]
    j = OrderJournal(cfg["live"]["journal_path"], "paper")
    assert j.get_state("last_session") == "2018-06-05"
    assert len(j.entries("buy")) == 3 and all(e.status == "paper" for e in j.entries())
    log = (tmp_path / "live.log").read_text()
    assert "session 2018-06-04 finished" in log and "resuming after 2018-06-04" in log


def test_kill_switch_stops_new_positions(cfg, tmp_path):
    (tmp_path / "KILL").write_text("test")
    r = run_live(cfg, "momentum", "paper", "sample", max_sessions=1)
    assert r.sessions == ["2018-06-01"] and r.trades == []
    assert r.broker.risk_rejections and "kill switch" in r.broker.risk_rejections[0]


def test_cli_live_paper_and_kill(cfg, tmp_path, capsys):
    conf = tmp_path / "c.toml"
    conf.write_text("[live]\n" + "".join(f'{k} = "{cfg["live"][k]}"\n' for k in
                                         ("journal_path", "log_file", "kill_switch_file", "screenshots_dir")))
    assert main(["live", "--venue", "paper", "--feed", "sample", "--max-sessions", "2",
                 "--config", str(conf)]) == 0
    out = capsys.readouterr().out
    assert "sessions 2018-06-01, 2018-06-04" in out and "2 round trips" in out
    assert main(["live", "--kill", "manual stop", "--config", str(conf)]) == 0
    assert (tmp_path / "KILL").exists()
    assert main(["live", "--revive", "--config", str(conf)]) == 0
    assert not (tmp_path / "KILL").exists()


def test_live_flag_without_confirmation_is_refused(cfg, tmp_path, capsys):
    conf = tmp_path / "c.toml"
    conf.write_text(f'[live]\njournal_path = "{tmp_path}/j.sqlite"\n')
    assert main(["live", "--venue", "ig", "--live", "--feed", "twelvedata", "--config", str(conf)]) == 2
    assert "--live needs [live] confirm" in capsys.readouterr().err
    with pytest.raises(ValueError, match="confirm"):
        SeleniumBroker(live=True, confirm="yes please")


def test_next_sessions_and_wait_until_open():
    s = next_sessions("XNAS", "2018-07-03", "2018-06-01", 2)
    assert [d.date().isoformat() for d in s.index] == ["2018-07-05", "2018-07-06"]   # July 4th skipped
    import pandas as pd
    slept = []
    opened = wait_until_open("XNAS", now=lambda: pd.Timestamp("2024-12-24T20:00Z").to_pydatetime(),
                             sleep=slept.append, lead_s=0)
    assert opened == pd.Timestamp("2024-12-26T14:30Z") and slept[0] == pytest.approx(42.5 * 3600)


def _dry_cerebro(broker, bars):
    c = bt.Cerebro(stdstats=False)
    data = ReplayData(dataframe=bars, exchange="XNAS", interval=5)
    c.adddata(data)
    c.broker = broker
    broker.setdata(data)
    c.addstrategy(live_strategy(IntradayMomentum), stake=1000.0, spread=0.01)
    return c.run()[0]


def test_dry_run_broker_records_actions_and_touches_no_venue(tmp_path):
    bars = sample_intraday("2018-06-01", "2018-06-05")
    journal = OrderJournal(tmp_path / "j.sqlite", "ig")
    broker = SeleniumBroker(store=None, journal=journal, notifier=Notifier(seed=1))
    strat = _dry_cerebro(broker, bars)
    assert not broker.is_live
    buys = [a for a in broker.actions if a["action"] == "buy"]
    assert len(buys) == 3 and all(a["dry_run"] for a in broker.actions)
    assert all(e.status == "dry_run" for e in journal.entries())
    assert len(broker.roundtrips) == 3
    for rt in broker.roundtrips:
        assert rt["exit_reason"] in ("session_end", "stop", "knockout") and rt["invested"] <= 1000.0 + 1e-6
    assert broker.getvalue() == pytest.approx(10_000 + sum(r["pnl"] for r in broker.roundtrips))


def test_dry_run_broker_books_stop_and_knockout(tmp_path):
    # a long certificate 0.5 % below the index: any ordinary dip knocks it out
    bars = sample_intraday("2018-06-01", "2018-06-08")
    broker = SeleniumBroker(notifier=Notifier(), risk=RiskGuard(RiskLimits(max_leverage=None)))
    c = bt.Cerebro(stdstats=False)
    data = ReplayData(dataframe=bars, exchange="XNAS", interval=5)
    c.adddata(data)
    c.broker = broker
    c.addstrategy(live_strategy(IntradayMomentum), stake=1000.0, distance=0.003, direction_rule="long",
                  decision_bar=2)
    c.run()
    reasons = [r["exit_reason"] for r in broker.roundtrips]
    assert "knockout" in reasons or "stop" in reasons
    for r in broker.roundtrips:
        if r["exit_reason"] == "knockout":
            assert r["exit_price"] == 0.0 and r["pnl"] < 0


def test_paper_loop_posts_notifications_to_the_webhooks(cfg, monkeypatch):
    from tests.test_live_notify import Hook
    hook = Hook()
    try:
        monkeypatch.setenv("MLTRADE_SLACK_WEBHOOK_URL", hook.url + "/slack")
        monkeypatch.setenv("MLTRADE_WEBHOOK_URL", hook.url + "/hook")
        r = run_live(cfg, "momentum", "paper", "sample", max_sessions=2)
        slack = [b["text"] for p, b in hook.bodies if p == "/slack"]
        events = [b["event"] for p, b in hook.bodies if p == "/hook"]
        assert len(slack) == len(events) == 2 * len(r.trades) == 4   # a buy and a sell message per trade
        assert events == [e for t in r.trades for e in ("buy", "profit" if t["pnl"] > 0 else "loss")]
    finally:
        hook.close()


@pytest.mark.timeout(300)
def test_paper_trades_the_live_twelvedata_feed_on_a_virtual_clock(cfg):
    import pandas as pd

    from mltrade.feeds.twelvedata import TwelveDataClient
    from tests.fake_twelvedata import FakeTwelveData, VirtualClock, random_bars

    bars = random_bars("2024-03-06", days=3, seed=11)
    clock = VirtualClock(pd.Timestamp("2024-03-06 06:00", tz="America/New_York").tz_convert("UTC"))
    with FakeTwelveData(bars, key="k-123", now=clock) as srv:
        client = TwelveDataClient(api_key="k-123", base_url=srv.url, credits_per_minute=1000,
                                  rate_period=0.01,
                                  timeout=2.0, max_retries=0, backoff_base=0.0, now=clock, sleep=clock.sleep)
        r = run_live(cfg, "momentum", "paper", "twelvedata", max_sessions=2, clock=clock, sleep=clock.sleep,
                     feed_kwargs={"client": client, "max_wait": 60.0})
        assert r.sessions == ["2024-03-06", "2024-03-07"]
        assert len(r.trades) == 2 and all(t["exit_reason"] in ("session_end", "stop", "knockout")
                                          for t in r.trades)
        # the decision used bar 17 of each session: entry at the open of the 18th bar (10:55 New York)
        assert [t["entry_time"][11:16] for t in r.trades] == ["10:55", "10:55"]
        # restart on the next morning continues with the third session only
        clock.t = pd.Timestamp("2024-03-08 07:00", tz="America/New_York").tz_convert("UTC")
        r2 = run_live(cfg, "momentum", "paper", "twelvedata", max_sessions=1, clock=clock, sleep=clock.sleep,
                      feed_kwargs={"client": client, "max_wait": 60.0})
        assert r2.sessions == ["2024-03-08"]


def test_cli_twelvedata_without_api_key_fails_at_once(cfg, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TWELVEDATA_API_KEY", raising=False)
    conf = tmp_path / "c.toml"
    conf.write_text(f'[live]\njournal_path = "{tmp_path}/j.sqlite"\nlog_file = "{tmp_path}/live.log"\n')
    assert main(["live", "--venue", "paper", "--feed", "twelvedata", "--config", str(conf)]) == 2
    assert "TWELVEDATA_API_KEY" in capsys.readouterr().err


# ------------------------------------------------------------------ the persistent paper account
class HoldOvernight(KnockoutStrategy):
    """Buys a long certificate on the third bar when flat and holds it across sessions and runs."""

    params = (("flat_at_session_end", False), ("close_at_end", False))

    def next(self):
        if self.is_last_bar_of_data():
            if self.p.close_at_end and self.has_position():
                self.close_knockout(at_close=True, reason="session_end")
            return
        if len(self.data) == 3 and not self.has_position():
            self.open_knockout(1, distance=0.05, stake=1000.0)


register_strategy("test_hold_overnight", HoldOvernight)


def test_paper_account_carries_cash_and_positions_across_runs_unless_reset(cfg):
    cfg["strategy"]["params"] = {}           # the momentum defaults don't apply to this strategy
    r1 = run_live(cfg, "test_hold_overnight", "paper", "sample", max_sessions=1, report=False)
    assert r1.trades == [] and len(r1.broker.positions) == 1
    with Account(cfg["live"]["journal_path"], "paper") as acc:
        st = acc.load()
    assert st.cash == pytest.approx(r1.cash) and r1.cash < 10_000 - 900       # about 1,000 invested
    (held,) = st.positions
    buy_ref = held.ref
    j = OrderJournal(cfg["live"]["journal_path"], "paper")
    assert [e.ref for e in j.entries("buy")] == [buy_ref]
    # the next run starts with that cash and that position: no second buy, and it closes the old one
    r2 = run_live(cfg, "test_hold_overnight", "paper", "sample", max_sessions=1, report=False,
                  strategy_params={"close_at_end": True})
    assert r2.sessions == ["2018-06-04"] and len(r2.trades) == 1
    rt = r2.trades[0]
    assert rt["size"] == held.size and rt["entry_price"] == pytest.approx(held.price)
    assert r2.value == pytest.approx(10_000 + rt["pnl"])        # one account over both runs
    assert [e.ref for e in j.entries("buy")] == [buy_ref]
    (close,) = j.entries("close")
    assert close.parent == buy_ref and close.info["pnl"] == pytest.approx(rt["pnl"])
    with Account(cfg["live"]["journal_path"], "paper") as acc:
        assert acc.load().positions == [] and acc.load().cash == pytest.approx(r2.cash)
    # --reset: the configured cash again, nothing held; the journal keeps its history
    r3 = run_live(cfg, "test_hold_overnight", "paper", "sample", max_sessions=1, report=False, reset=True)
    assert r3.start_value == 10_000.0 and len(j.entries("buy")) == 2
    with Account(cfg["live"]["journal_path"], "paper") as acc:
        assert acc.load().resets == 1
    j.close()
    from mltrade.live.account import status_lines
    status = "\n".join(status_lines(cfg, "paper"))
    assert "; reset once" in status and "1 times" not in status


def test_paper_close_rows_link_to_their_buy(cfg):
    r = run_live(cfg, "momentum", "paper", "sample", max_sessions=2, report=False)
    j = OrderJournal(cfg["live"]["journal_path"], "paper")
    buys, closes = j.entries("buy"), j.entries("close")
    assert len(buys) == len(closes) == len(r.trades) == 2
    assert [c.parent for c in closes] == [b.ref for b in buys]
    assert [c.info["pnl"] for c in closes] == pytest.approx([t["pnl"] for t in r.trades])


def test_paper_run_writes_the_backtest_report_and_status_reads_the_account(cfg, tmp_path, capsys):
    import json

    import pandas as pd
    conf = tmp_path / "c.toml"
    conf.write_text("[live]\n" + "".join(f'{k} = "{cfg["live"][k]}"\n' for k in
                                         ("journal_path", "log_file", "kill_switch_file", "screenshots_dir")))
    assert main(["live", "--venue", "paper", "--max-sessions", "2", "--config", str(conf)]) == 0
    out = capsys.readouterr().out
    run_dir = Path(re.search(r"report: (\S+)report.html", out).group(1))
    assert run_dir.parent == tmp_path / "reports"
    summary = json.loads((run_dir / "summary.json").read_text())
    trades = pd.read_csv(run_dir / "trades.csv")
    assert (run_dir / "report.html").read_text().count("<table") >= 2
    assert summary["venue"] == "paper" and summary["sessions"] == ["2018-06-01", "2018-06-04"]
    assert summary["trades"] == len(trades) == 2 and summary["synthetic_intraday"] is True
    assert summary["final_value"] == pytest.approx(10_000 + trades["pnl"].sum())
    with Account(cfg["live"]["journal_path"], "paper") as acc:
        cash = acc.load().cash
    assert cash == pytest.approx(summary["final_value"])
    (tmp_path / "KILL").write_text("test\n")
    assert main(["live", "status", "--config", str(conf)]) == 0
    st = capsys.readouterr().out
    assert f"cash {cash:,.2f} (paper account" in st and "open positions: none" in st
    assert f"last session traded (2018-06-04): realised P&L {trades['pnl'].iloc[-1]:+,.2f} from 1" in st
    assert "today (" in st and "kill switch: ENGAGED" in st and "test" in st


def test_kill_switch_refusal_is_printed_on_stdout(cfg, tmp_path, capsys):
    conf = tmp_path / "c.toml"
    conf.write_text("[live]\n" + "".join(f'{k} = "{cfg["live"][k]}"\n' for k in
                                         ("journal_path", "log_file", "kill_switch_file", "screenshots_dir")))
    (tmp_path / "KILL").write_text("test\n")
    assert main(["live", "--venue", "paper", "--max-sessions", "1", "--config", str(conf)]) == 0
    out = capsys.readouterr().out
    assert "0 round trips" in out
    assert re.search(r"REFUSED 2018-06-01: 1 new position refused by the risk limits: kill switch engaged",
                     out)


def test_status_of_a_venue_lists_journal_positions_and_last_seen_cash(cfg, tmp_path):
    from datetime import date

    from mltrade.live.account import status_lines
    j = OrderJournal(cfg["live"]["journal_path"], "ig")
    held = j.begin("buy", direction=-1, barrier=16000.0, day=date(2024, 3, 4))
    j.update(held, "filled", price=2.5, size=200, deal_id="IG-D00007")
    done = j.begin("buy", direction=1, barrier=14000.0, day=date(2024, 3, 5))
    j.update(done, "closed")
    close = j.begin("close", parent=done, day=date(2024, 3, 5))
    j.update(close, "filled", price=3.0, pnl=-120.5, reason="stop")
    j.set_state("last_session", "2024-03-05")
    j.close()
    with Account(cfg["live"]["journal_path"], "ig") as acc:
        acc.save(9_379.5)
    out = "\n".join(status_lines(cfg, "ig", today=date(2024, 3, 5)))
    assert "cash 9,379.50 (last seen at the venue" in out and "open positions (journal): 1" in out
    assert f"{held} short barrier 16000.00 x200 @ 2.50 deal IG-D00007" in out
    assert "today (2024-03-05 UTC): realised P&L -120.50 from 1 closed trade" in out
    assert "kill switch: off" in out
    assert "open positions: none" in "\n".join(status_lines(cfg, "paper"))     # another venue: empty


def test_replay_stops_clearly_at_the_end_of_the_sample(cfg, caplog):
    cfg["live"]["replay_start"] = "2018-12-31"
    r = run_live(cfg, "momentum", "paper", "sample", max_sessions=2, report=False)
    assert r.sessions == ["2018-12-31"]
    assert "the replayed sample ends 2018-12-31: 1 of the 2 sessions asked for are left" in caplog.text
    with pytest.raises(ValueError, match=r"live.replay_start: the replayed sample ends 2018-12-31 and the "
                                         r"journal .*j.sqlite has traded up to 2018-12-31"):
        run_live(cfg, "momentum", "paper", "sample", max_sessions=1, report=False)
