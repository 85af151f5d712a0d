"""What the per-bar reconciliation costs against the keep-alive ping it replaced (fake venue, headless Chromium).

Starts the local fake IG venue and a real Chromium, logs in, opens one position, then times
``SeleniumBroker.reconcile()`` (one positions-page load plus the journal work) and the plain
keep-alive ``venue.ping()`` (the same page, no journal) and prints both and their ratio. A 5-minute
bar leaves 300 s for this.
Run: python benchmarks/bench_live_reconcile.py [--repeat N]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from mltrade.live.broker import LIVE_CONFIRMATION
from mltrade.live.credentials import Credentials
from mltrade.live.fakevenue import FakeVenue
from mltrade.live.journal import OrderJournal
from mltrade.live.store import SeleniumStore


def timed(fn, repeat: int) -> list:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mltrade-bench-"))
    with FakeVenue(index=15000.0, tr_rows=20) as v:
        store = SeleniumStore("ig", v.url, credentials=Credentials(v.state.username, v.state.password),
                              code=lambda: v.state.code, screenshots_dir=tmp / "shots")
        try:
            broker = store.getbroker(journal=OrderJournal(tmp / "j.sqlite", "ig"), live=True,
                                     confirm=LIVE_CONFIRMATION)
            broker.start()
            v.open_position("IGC016", 10)                 # one position to reconcile (adopted on the 1st run)
            broker.reconcile()
            rec = timed(broker.reconcile, args.repeat)
            ping = timed(lambda: store.call(store.venue.ping), args.repeat)
        finally:
            store.close()
    r, p = statistics.median(rec), statistics.median(ping)
    print(f"reconcile (positions page + journal), median of {args.repeat}: {r * 1000:.0f} ms")
    print(f"keep-alive ping (positions page only), median of {args.repeat}: {p * 1000:.0f} ms")
    print(f"ratio reconcile/ping: {r / p:.2f}; share of a 5-minute bar: {r / 300 * 100:.3f} %")


if __name__ == "__main__":
    main()
