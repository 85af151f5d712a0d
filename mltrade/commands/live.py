"""``mltrade live``: paper or venue trading by the exchange calendar (see docs/live.md).

``mltrade live [run]`` trades; ``mltrade live check`` logs in and walks the venue's pages read-only;
``mltrade live status`` prints the account (positions, cash, today's P&L, kill switch).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional

ACTIONS = ("run", "check", "status")


def register(sub: Any) -> None:
    """Add the ``live`` sub-command."""
    from mltrade.live.runner import FEEDS, VENUES
    p = sub.add_parser(
        "live", help="trade a strategy live: paper (default), IG or Trade Republic",
        description="Run sessions of a strategy by the exchange calendar. Paper mode (default) fills "
                    "with the simulated KnockoutBroker against live prices. IG / Trade Republic are "
                    "driven through their web pages: a dry run unless --live AND [live] confirm are both "
                    "given. Automating a broker's web interface can break its terms of service. "
                    "'live check' logs in and reports which profile selectors each page has; "
                    "'live status' prints positions, cash, today's P&L and the kill switch.")
    p.add_argument("action", nargs="?", choices=ACTIONS, default="run",
                   help="run (default): trade; check: walk the venue's pages read-only; status: the account")
    p.add_argument("--strategy", default=None, help="registered strategy name (default: [strategy] name)")
    p.add_argument("--venue", choices=VENUES, default=None, help="paper | ig | traderepublic ([live] venue)")
    p.add_argument("--feed", choices=FEEDS, default="sample",
                   help="sample = replay the embedded sample as if live; twelvedata = live TwelveData feed")
    p.add_argument("--config", help="TOML config file")
    p.add_argument("--max-sessions", type=int, default=1, help="sessions to run before exiting (default 1)")
    p.add_argument("--live", action="store_true",
                   help="send real orders (also needs [live] confirm in the config; refuses --feed sample)")
    p.add_argument("--demo", action="store_true",
                   help="trade against the local fake venue on 127.0.0.1 (ig/traderepublic demo, offline)")
    p.add_argument("--speed", type=float, default=None, help="replay speed, times real time (0 = no waiting)")
    p.add_argument("--llm", action="store_true",
                   help="pass every decision through the LLM overlay ([llm] config; also [llm] enabled = true)")
    p.add_argument("--reset", action="store_true",
                   help="paper: start the paper account afresh (cash from [backtest] cash, no positions)")
    p.add_argument("--kill", metavar="REASON", help="engage the kill switch (no new positions) and exit")
    p.add_argument("--revive", action="store_true", help="remove the kill switch file and exit")
    p.set_defaults(func=_live)


def _err(msg: str) -> int:
    print(f"mltrade: error: {msg}", file=sys.stderr)
    return 2


#: how :class:`~mltrade.live.risk.RiskGuard` words a refusal by the kill switch
KILLED = "kill switch engaged"


def _print_kill_switch(refusals: list, kill_file: Optional[str]) -> None:
    """One line for every new position the kill switch refused in the run (any number of days)."""
    days = sorted({str(d) for d, r in refusals if r.startswith(KILLED)})
    if not days:
        return
    n = sum(1 for _, r in refusals if r.startswith(KILLED))
    from mltrade.state import relocate
    why = ""
    try:
        why = Path(relocate(kill_file or "")).read_text(encoding="utf-8").strip().splitlines()[0]
    except (OSError, IndexError):
        pass
    span = days[0] if len(days) == 1 else f"{days[0]} .. {days[-1]}"
    print(f"  REFUSED {span}: {n} new position{'s' if n != 1 else ''} refused by the risk limits: {KILLED} "
          f"({relocate(kill_file or '')}{': ' + why if why else ''}); 'mltrade live --revive' removes it")


def _start_demo(venue: str, lv: dict) -> Any:
    from mltrade.feeds.sample import sample_intraday
    from mltrade.live.fakevenue import FakeVenue
    first = sample_intraday(lv["replay_start"]).iloc[0]["open"]
    fake = FakeVenue(index=float(first)).start()
    print(f"demo: fake {venue} venue at {fake.url}")
    return fake


def _close_stores() -> None:
    from mltrade.live.store import SeleniumStore
    for store in list(SeleniumStore._instances.values()):
        store.close()


def _check(args: argparse.Namespace, cfg: dict, venue: str) -> int:
    from mltrade.live.check import check_venue
    from mltrade.live.credentials import Credentials
    from mltrade.live.runner import make_store

    if venue == "paper":
        return _err("live check: pick a venue with --venue ig|traderepublic (paper has no pages)")
    fake: Optional[Any] = None
    kw: dict = {}
    lv = cfg["live"]
    if args.demo:
        fake = _start_demo(venue, lv)
        kw = dict(base_url=fake.url, credentials=Credentials(fake.state.username, fake.state.password),
                  code=lambda: fake.state.code)
    try:
        store = make_store(venue, cfg, **kw)
        rep = check_venue(store)
    except RuntimeError as e:
        return _err(str(e).splitlines()[0])
    finally:
        _close_stores()
        if fake is not None:
            fake.stop()
    for line in rep.lines():
        print(line)
    return 0 if rep.ok else 1


def _live(args: argparse.Namespace) -> int:
    from mltrade.config import load_config
    from mltrade.live.credentials import protect_handlers
    from mltrade.live.risk import RiskGuard, RiskLimits

    protect_handlers()       # mask secrets in every log handler (stderr at -v included)
    cfg = load_config(args.config)
    lv = cfg["live"]
    if args.kill or args.revive:
        guard = RiskGuard(RiskLimits.from_config(lv))
        if args.kill:
            print(f"kill switch engaged: {guard.kill(args.kill)}")
        else:
            guard.revive()
            print("kill switch removed")
        return 0
    venue = args.venue or lv["venue"]
    if args.action == "check":
        return _check(args, cfg, venue)
    if args.action == "status":
        from mltrade.live.account import status_lines
        for line in status_lines(cfg, venue):
            print(line)
        return 0
    return _run(args, cfg, venue)


def _run(args: argparse.Namespace, cfg: dict, venue: str) -> int:
    from mltrade.live.runner import run_live

    lv = cfg["live"]
    strategy = args.strategy or cfg["strategy"]["name"]
    if args.live and venue == "paper":
        return _err("--live sends real orders to a venue; paper trading needs no --live "
                    "(pick --venue ig|traderepublic)")
    if args.live and args.feed == "sample" and not args.demo:
        return _err("--live refuses the replayed sample feed (it would trade a real venue on 2018 bars); "
                    "use --feed twelvedata, or --demo for the local fake venue")
    if lv["live"] and not args.live and venue != "paper":
        print("note: [live] live = true in the config has no effect without --live: this is a dry run",
              file=sys.stderr)
    live = bool(args.live)
    source = args.config or "the default config"
    from mltrade.live.runner import preflight
    preflight(cfg, strategy, venue, source, reset=args.reset and venue == "paper")   # before the demo venue
    kw: dict = {}
    fake = None
    if args.demo and venue != "paper":
        from mltrade.live.broker import LIVE_CONFIRMATION
        from mltrade.live.credentials import Credentials

        fake = _start_demo(venue, lv)
        kw = dict(base_url=fake.url, credentials=Credentials(fake.state.username, fake.state.password),
                  code=lambda: fake.state.code, on_bar=lambda d: fake.set_index(float(d.close[0])))
        if live:   # the local fake venue holds no real money: the opt-in is implied
            cfg["live"]["confirm"] = LIVE_CONFIRMATION
    elif live and not lv["confirm"]:
        return _err("--live needs [live] confirm in the config as well (see docs/live.md)")
    if args.reset and venue != "paper":
        return _err("--reset starts the paper account afresh; a venue's account is the venue's")
    try:
        res = run_live(cfg, strategy, venue, args.feed, max_sessions=args.max_sessions, live=live,
                       speed=args.speed, reset=args.reset, llm=True if args.llm else None,
                       config_source=source, **kw)
    except RuntimeError as e:      # missing API key / credentials / browser / 2FA: say what to fix
        return _err(str(e).splitlines()[0])
    finally:
        if fake is not None:
            fake.stop()
        if venue != "paper":
            _close_stores()
    mode = "paper" if venue == "paper" else ("LIVE" if live else "dry run")
    print(f"{strategy} on {venue} ({mode}): sessions {', '.join(res.sessions) or '-'}; "
          f"{len(res.trades)} round trips; value {res.value:,.2f}")
    for t in res.trades:
        print(f"  {t['entry_time']} {t['direction']:5s} barrier {t['barrier']:.2f} x{t['size']:.0f} "
              f"{t['entry_price']:.2f} -> {t['exit_price']:.2f} ({t['exit_reason']}) P&L {t['pnl']:+.2f}")
    if res.llm_line:
        print(f"  {res.llm_line}")
    _print_kill_switch(res.refusals, lv.get("kill_switch_file"))
    seen: dict = {}
    for day, reason in res.refusals:            # one line per day and reason (a strategy may retry)
        if not reason.startswith(KILLED):
            seen[(day, reason)] = seen.get((day, reason), 0) + 1
    for (day, reason), n in seen.items():
        times = f" ({n} times)" if n > 1 else ""
        print(f"  REFUSED {day}: new position refused by the risk limits: {reason}{times}")
    if res.run_dir is not None:
        print(f"report: {res.run_dir / 'report.html'}")
    print(f"log: {res.log_file}")
    return 0
