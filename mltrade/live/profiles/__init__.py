"""Venue profiles: each venue's page URLs, CSS selectors, labels and number format in a TOML file.

The shipped defaults (``ig.toml``, ``traderepublic.toml`` next to this module) describe the local
fake venue. A user file overrides any subset of their keys: ``[live.profiles] <venue> = "path.toml"``
in the config, else ``$XDG_CONFIG_HOME/mltrade/venues/<venue>.toml`` (``~/.config/...``) when it
exists. Unknown keys and values of the wrong kind are rejected with the file and the key.
``mltrade live check`` walks the pages listed in the ``[[check]]`` tables.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from mltrade.config import read_toml

PROFILE_DIR = Path(__file__).resolve().parent
VENUES = ("ig", "traderepublic")
LOCALES = ("de", "en")
SECTIONS = ("numbers", "urls", "labels", "selectors", "check")
CHECK_KEYS = ("page", "click", "expect", "optional", "rows", "numbers")


class ProfileError(ValueError):
    """A venue profile that does not fit; the message names the file and the key."""


def canonical_venue(venue: str) -> str:
    """``ig`` or ``traderepublic`` (``tr`` accepted)."""
    v = {"tr": "traderepublic"}.get(venue, venue)
    if v not in VENUES:
        raise ProfileError(f"venue: expected one of {VENUES}, got {venue!r}")
    return v


def default_profile_path(venue: str) -> Path:
    """The shipped profile of ``venue``."""
    return PROFILE_DIR / f"{canonical_venue(venue)}.toml"


def user_profile_path(venue: str) -> Path:
    """``$XDG_CONFIG_HOME/mltrade/venues/<venue>.toml`` (``~/.config`` when XDG_CONFIG_HOME is unset)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mltrade" / "venues" / f"{canonical_venue(venue)}.toml"


@dataclass(frozen=True)
class VenueProfile:
    """URLs, selectors, labels, number locale and the ``live check`` walk of one venue."""

    venue: str
    sources: Tuple[str, ...]
    locale: str
    urls: Mapping[str, str]
    selectors: Mapping[str, str]
    labels: Mapping[str, Any] = field(default_factory=dict)
    check: Tuple[dict, ...] = ()

    def sel(self, key: str) -> str:
        """The CSS selector (or URL path) called ``key``."""
        if key in self.selectors:
            return self.selectors[key]
        if key in self.urls:
            return self.urls[key]
        raise ProfileError(f"{' + '.join(self.sources)}: no selector or URL named {key!r}")

    def lookup(self) -> Dict[str, str]:
        """URLs and selectors in one dict (the venue drivers' ``SELECTORS``)."""
        return {**self.urls, **self.selectors}

    def label(self, key: str) -> Any:
        """A label (``account_type``, ``long``)."""
        if key not in self.labels:
            raise ProfileError(f"{' + '.join(self.sources)}: [labels] has no {key!r}")
        return self.labels[key]


def _read(path: Path) -> dict:
    return read_toml(path, ProfileError, "venue profile")


def _unknown(src: Path, where: str, key: str, valid: List[str]) -> ProfileError:
    near = difflib.get_close_matches(key, valid, n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    shown = ", ".join(valid) if len(valid) <= 12 else ", ".join(valid[:12]) + ", ..."
    return ProfileError(f"{src}: unknown key '{where}{key}'{hint} (valid: {shown})")


def _check_strings(src: Path, section: str, table: Any, ref: Mapping[str, Any]) -> None:
    if not isinstance(table, dict):
        raise ProfileError(f"{src}: [{section}] must be a table, got {table!r}")
    for k, v in table.items():
        if k not in ref:
            raise _unknown(src, f"{section}.", k, list(ref))
        want = ref[k]
        if isinstance(want, list):
            if not (isinstance(v, list) and v and all(isinstance(x, str) and x for x in v)):
                raise ProfileError(f"{src}: '{section}.{k}' expects a list of non-empty strings, got {v!r}")
        elif not (isinstance(v, str) and v.strip()):
            raise ProfileError(f"{src}: '{section}.{k}' expects a non-empty string, got {v!r}")


def _check_walk(src: Path, walk: Any, urls: Mapping[str, str], selectors: Mapping[str, str]) -> None:
    if not isinstance(walk, list) or not all(isinstance(w, dict) for w in walk):
        raise ProfileError(f"{src}: 'check' expects [[check]] tables, got {walk!r}")
    for i, w in enumerate(walk, 1):
        where = f"check[{i}]"
        for k in w:
            if k not in CHECK_KEYS:
                raise _unknown(src, f"{where}.", k, list(CHECK_KEYS))
        page = w.get("page")
        if page not in urls:
            raise ProfileError(f"{src}: '{where}.page' expects a key of [urls] ({', '.join(urls)}), "
                               f"got {page!r}")
        if "click" in w and w["click"] not in selectors:
            raise ProfileError(f"{src}: '{where}.click' expects a key of [selectors], got {w['click']!r}")
        rows = w.get("rows", {})
        if not isinstance(rows, dict):
            raise ProfileError(f"{src}: '{where}.rows' expects a table of row key = [cell keys], "
                               f"got {rows!r}")
        lists = [(f"{where}.{k}", w.get(k, [])) for k in ("expect", "optional", "numbers")]
        lists += [(f"{where}.rows.{k}", v) for k, v in rows.items()] + [(f"{where}.rows", list(rows))]
        for name, keys in lists:
            if not isinstance(keys, list):
                raise ProfileError(f"{src}: '{name}' expects a list of selector keys, got {keys!r}")
            for k in keys:
                if k not in selectors:
                    raise _unknown(src, f"{name}: ", str(k), list(selectors))


def load_profile(venue: str, path: Optional[str | Path] = None) -> VenueProfile:
    """The shipped profile of ``venue`` overridden by ``path`` (or the user file, when it exists)."""
    venue = canonical_venue(venue)
    base_path = default_profile_path(venue)
    base = _read(base_path)
    sources = [str(base_path)]
    over_path = Path(path).expanduser() if path else user_profile_path(venue)
    over: dict = {}
    if path or over_path.is_file():
        over = _read(over_path)
        sources.append(str(over_path))
        for k in over:
            if k not in SECTIONS:
                raise _unknown(over_path, "", k, list(SECTIONS))
        _check_strings(over_path, "urls", over.get("urls", {}), base["urls"])
        _check_strings(over_path, "selectors", over.get("selectors", {}), base["selectors"])
        _check_strings(over_path, "labels", over.get("labels", {}), base["labels"])
        nums = over.get("numbers", {})
        if not isinstance(nums, dict):
            raise ProfileError(f"{over_path}: [numbers] must be a table, got {nums!r}")
        for k in nums:
            if k != "locale":
                raise _unknown(over_path, "numbers.", k, ["locale"])
    locale = over.get("numbers", {}).get("locale", base["numbers"]["locale"])
    if locale not in LOCALES:
        src = over_path if "locale" in over.get("numbers", {}) else base_path
        raise ProfileError(f"{src}: 'numbers.locale' expects one of {LOCALES} "
                           f"(\"en\" = 1,234.56, \"de\" = 1.234,56), got {locale!r}")
    urls = {**base["urls"], **over.get("urls", {})}
    selectors = {**base["selectors"], **over.get("selectors", {})}
    labels = {**base["labels"], **over.get("labels", {})}
    walk = over.get("check", base.get("check", []))
    _check_walk(over_path if "check" in over else base_path, walk, urls, selectors)
    return VenueProfile(venue=venue, sources=tuple(sources), locale=locale, urls=urls, selectors=selectors,
                        labels=labels, check=tuple(walk))
