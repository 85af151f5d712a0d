"""Help pages of sub-commands that argparse cannot tell apart: ``mltrade live status --help`` and
``mltrade live check --help`` (``status``/``check`` are values of ``live``'s action, not parsers)."""
from __future__ import annotations

import argparse
from typing import List

#: ``live`` actions: (description, the options that apply to them)
LIVE_ACTIONS = {
    "status": ("Print the account of a venue: positions, cash, today's P&L and whether the kill switch is "
               "engaged. Read-only: sends no order.", ("--venue", "--config", "--demo")),
    "check": ("Log in to a venue (IG or Trade Republic) and walk its pages read-only: reports which of the "
              "profile's selectors each page has, so a changed page is found before a session trades. "
              "Paper has no pages.", ("--venue", "--config", "--demo")),
}


def live_action_parser(action: str) -> argparse.ArgumentParser:
    """The parser whose help ``mltrade live ACTION --help`` prints."""
    from mltrade.live.runner import VENUES

    description, opts = LIVE_ACTIONS[action]
    p = argparse.ArgumentParser(prog=f"mltrade live {action}", description=description)
    if "--venue" in opts:
        p.add_argument("--venue", choices=VENUES, help="ig | traderepublic | paper ([live] venue)")
    if "--config" in opts:
        p.add_argument("--config", help="TOML config file")
    if "--demo" in opts:
        p.add_argument("--demo", action="store_true", help="use the local fake venue on 127.0.0.1 (offline)")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    return p


def specific_help(argv: List[str]) -> bool:
    """Print the action's own help for ``live status|check ... --help``; ``True`` when it did."""
    words = [a for a in argv if not a.startswith("-")]
    if len(words) >= 2 and words[0] == "live" and words[1] in LIVE_ACTIONS and ({"-h", "--help"} & set(argv)):
        live_action_parser(words[1]).print_help()
        return True
    return False
