"""``mltrade live check``: log in and walk a venue's pages read-only, reporting each profile selector.

The walk comes from the profile's ``[[check]]`` tables: open a page, optionally click a view control
(a tab, never an order button), wait up to the store's time-out for the expected elements, then look
for the row cells inside the first row of each list. Nothing is submitted. Selectors that no page
lists are reported as not checked; row cells of an empty list (no open positions) as unverified.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from mltrade.live.credentials import mask

#: JS: for each selector, 1 = present, 0 = absent, -1 = not valid CSS
_PRESENT = """
const out = [];
for (const s of arguments[0]) {
  try { out.push(document.querySelector(s) ? 1 : 0); } catch (e) { out.push(-1); }
}
return out;
"""
#: JS: the first row of arguments[0]: its data-* and, per cell selector, 1/0/-1 as above
_ROW = """
let r; try { r = document.querySelector(arguments[0]); } catch (e) { return null; }
if (!r) return null;
const cells = arguments[1].map(s => { try { return r.querySelector(s) ? 1 : 0; } catch (e) { return -1; } });
return [Object.assign({}, r.dataset), cells];
"""
_TEXT = "try { const e = document.querySelector(arguments[0]); return e ? e.textContent : null; } " \
        "catch (e) { return null; }"


@dataclass
class SelectorResult:
    """One selector on one page: status is found | missing | invalid | unverified."""

    page: str
    key: str
    css: str
    status: str
    note: str = ""


@dataclass
class CheckReport:
    """Everything ``live check`` saw."""

    venue: str
    base_url: str
    sources: List[str]
    results: List[SelectorResult] = field(default_factory=list)
    pages: List[str] = field(default_factory=list)
    numbers: List[str] = field(default_factory=list)
    login: str = "not tried"
    not_checked: List[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def ok(self) -> bool:
        """True when login passed and no selector is missing or invalid."""
        return self.login == "ok" and not any(r.status in ("missing", "invalid") for r in self.results)

    def lines(self) -> List[str]:
        """The report as printed by the command."""
        out = [f"live check: {self.venue} at {self.base_url}", f"profile: {' + '.join(self.sources)}"]
        by_page: Dict[str, List[SelectorResult]] = {}
        for r in self.results:
            by_page.setdefault(r.page, []).append(r)
        for head in self.pages:
            page = head.split()[0]
            out.append(head)
            for r in by_page.get(page, []):
                note = f"  ({r.note})" if r.note else ""
                word = "ok" if r.status == "found" else r.status.upper()
                out.append(f"  {word:10s} {r.key:18s} {r.css}{note}")
            if page == "login_page":
                out.append(f"  login + 2FA: {self.login}")
        out += [f"number: {n}" for n in self.numbers]
        if self.not_checked:
            out.append(f"not checked (appear only after an action): {', '.join(self.not_checked)}")
        out.append(f"result: {self.count('found')} found, {self.count('missing')} missing, "
                   f"{self.count('invalid')} invalid, {self.count('unverified')} unverified; "
                   f"login {self.login}"
                   f" -> {'OK' if self.ok else 'FAILED'}")
        return out


def _wait_present(venue: Any, css: List[str], timeout: float) -> List[int]:
    end = time.monotonic() + timeout
    while True:
        got = venue.driver.execute_script(_PRESENT, css)
        if all(g != 0 for g in got) or time.monotonic() > end:
            return got
        time.sleep(0.1)


def _wait_row(venue: Any, row_css: str, cells: List[str], timeout: float) -> Optional[list]:
    end = time.monotonic() + timeout
    while True:
        got = venue.driver.execute_script(_ROW, row_css, cells)
        if got is not None or time.monotonic() > end:
            return got
        time.sleep(0.1)


def check_venue(store: Any, timeout: Optional[float] = None) -> CheckReport:
    """Log in through ``store`` and walk its venue's profile pages read-only; returns the report."""
    venue = store.venue
    prof = venue.profile
    wait = float(timeout or store.timeout)
    rep = CheckReport(venue=venue.name, base_url=store.base_url, sources=list(prof.sources))
    ctx: Dict[str, str] = {"side": "long"}
    listed = set()
    for step in prof.check:
        page = step["page"]
        url = prof.sel(page)
        keys = list(step.get("expect", [])) + list(step.get("optional", []))
        rows = dict(step.get("rows", {}))
        listed.update(keys, *rows.values(), [step.get("click")] if step.get("click") else [])
        if page != "login_page" and not _logged_in(store, rep):
            rep.pages.append(f"{page}  (skipped: not logged in)")
            continue
        if not _open_page(store, step, url, ctx, wait, rep):
            continue
        optional = set(step.get("optional", []))
        _check_selectors(venue, page, keys, optional, wait, rep)
        _check_rows(venue, page, rows, optional, wait, ctx, rep)
        _check_numbers(venue, page, step.get("numbers", []), wait, rep)
    rep.not_checked = [k for k in prof.selectors if k not in listed]
    return rep


_STATUS = {1: "found", 0: "missing", -1: "invalid"}


def _logged_in(store: Any, rep: CheckReport) -> bool:
    """Log in once (before the first page behind the login); a failure is reported, not raised."""
    if rep.login == "not tried":
        try:
            store.login()
            rep.login = "ok"
        except Exception as e:      # report, don't raise: the point is to say what is wrong
            rep.login = "FAILED: " + mask(str(e).splitlines()[0] if str(e) else type(e).__name__)
    return rep.login == "ok"


def _open_page(store: Any, step: dict, url: str, ctx: Dict[str, str], wait: float,
               rep: CheckReport) -> bool:
    """Load the step's page (``url`` filled from earlier pages) and click what it says; False: skipped."""
    venue, prof, page = store.venue, store.venue.profile, step["page"]
    try:
        path = url.format_map(ctx)
    except KeyError as e:
        rep.pages.append(f"{page}  {url}  (skipped: no {e} from an earlier page)")
        return False
    venue.driver.get(path if "://" in path else store.base_url + path)
    head = f"{page}  {path}"
    if step.get("click"):
        got = _wait_present(venue, [prof.sel(step["click"])], wait)
        if got[0] == 1:
            venue.driver.execute_script("document.querySelector(arguments[0]).click();",
                                        prof.sel(step["click"]))
            head += f"  (clicked {step['click']})"
    rep.pages.append(head)
    return True


def _check_selectors(venue: Any, page: str, keys: List[str], optional: set, wait: float,
                     rep: CheckReport) -> None:
    """Each expected (or optional) selector: found, missing or invalid on the page."""
    prof = venue.profile
    css = [prof.sel(k) for k in keys]
    got = _wait_present(venue, css, wait) if css else []
    for k, c, g in zip(keys, css, got):
        if g == 0 and k in optional:
            rep.results.append(SelectorResult(page, k, c, "unverified", "list is empty"))
        else:
            rep.results.append(SelectorResult(page, k, c, _STATUS[g]))


def _check_rows(venue: Any, page: str, rows: dict, optional: set, wait: float, ctx: Dict[str, str],
                rep: CheckReport) -> None:
    """The cells of the first row of each table (their values fill later pages' URLs)."""
    prof = venue.profile
    for row_key, cells in rows.items():
        cells_css = [prof.sel(k) for k in cells]
        row = _wait_row(venue, prof.sel(row_key), cells_css, 0.5 if row_key in optional else wait)
        if row is None:
            for k, c in zip(cells, cells_css):
                rep.results.append(SelectorResult(page, k, c, "unverified", f"no {row_key} on the page"))
            continue
        data, flags = row
        ctx.update({k: str(v) for k, v in data.items() if k not in ctx})
        for k, c, g in zip(cells, cells_css, flags):
            rep.results.append(SelectorResult(page, k, c, _STATUS[g], f"in {row_key}"))


def _check_numbers(venue: Any, page: str, keys: List[str], wait: float, rep: CheckReport) -> None:
    """Each number on the page read in the profile's locale (a failure marks its selector invalid)."""
    from mltrade.live.formats import parse_number

    prof = venue.profile
    for k in keys:
        end = time.monotonic() + wait
        text = venue.driver.execute_script(_TEXT, prof.sel(k))
        while text is not None and not text.strip() and time.monotonic() < end:   # filled in later
            time.sleep(0.1)
            text = venue.driver.execute_script(_TEXT, prof.sel(k))
        if text is None:
            rep.numbers.append(f"{k}: element not found")
            continue
        try:
            value = parse_number(text, prof.locale, field=f"{venue.name}.{k}")
            rep.numbers.append(f"{k} {text.strip()!r} -> {value:.2f} ({prof.locale})")
        except ValueError as e:
            rep.numbers.append(f"{k}: FAILED {e}")
            rep.results.append(SelectorResult(page, k, prof.sel(k), "invalid",
                                              f"number not in {prof.locale!r} format"))
