"""Parse numbers as venues print them (German ``1.234,56 €``, English ``1,234.56``), strictly.

A number in any shape other than the profile's locale (the other locale's separators, a grouping
that is not in threes, a lone separator followed by three digits, which one locale reads as a
thousands group and the other as decimals) is refused with :class:`NumberFormatError`, never
guessed. :func:`check_plausible` refuses a value that jumps beyond a factor from the last one known.
"""
from __future__ import annotations

import math
import re
from typing import Optional

_CLEAN = re.compile(r"[\s\u00a0\u202f€$£%xX]|EUR|USD|GBP|CHF")
_SEPS = {"de": (".", ","), "en": (",", ".")}    # (thousands, decimal)


class NumberFormatError(ValueError):
    """Text that is not a number in the venue's locale; ``field``, ``text`` and ``locale`` say which."""

    def __init__(self, message: str, field: str = "number", text: str = "", locale: str = ""):
        super().__init__(message)
        self.field, self.text, self.locale = field, text, locale


class ImplausibleNumber(NumberFormatError):
    """A price, cash amount or size that jumped beyond the configured factor from its last known value."""


def _example(locale: str) -> str:
    return "1.234,56" if locale == "de" else "1,234.56"


def parse_number(text: Optional[str], locale: str = "de", field: str = "number",
                 integer: bool = False) -> float:
    """Parse ``text`` as printed in ``locale`` ("de": ``.`` thousands, ``,`` decimal; "en": the reverse).

    Currency signs, ``x``/``%`` suffixes, spaces and the Unicode minus are ignored. Thousands groups
    must be groups of three; a text that could be read differently in the other locale (``1,552``,
    ``3.220``) is refused unless ``integer`` (a count: no decimal separator allowed). Raises
    :class:`NumberFormatError` naming ``field`` and the text.
    """
    if locale not in _SEPS:
        raise ValueError(f"locale: expected 'de' or 'en', got {locale!r}")
    if text is None:
        raise NumberFormatError(f"{field}: expected a number, got None", field, "", locale)
    raw = str(text)
    s = _CLEAN.sub("", raw.replace("\u2212", "-"))
    group, dec = _SEPS[locale]
    sign = ""
    if s[:1] in "+-" and s:
        sign, s = s[0], s[1:]

    def bad(why: str) -> NumberFormatError:
        return NumberFormatError(f"{field}: {raw!r} is not a number in the profile's locale {locale!r} "
                                 f"(e.g. {_example(locale)}{', a whole count' if integer else ''}): {why}",
                                 field, raw, locale)

    g, d = re.escape(group), re.escape(dec)
    whole = rf"(\d{{1,3}}(?:{g}\d{{3}})+|\d+)"
    m = re.fullmatch(whole + (r"" if integer else rf"(?:{d}(\d+))?"), s)
    if not m:
        if not s:
            raise bad("no digits")
        if dec in s and integer:
            raise bad(f"a count has no decimal separator {dec!r}")
        if re.fullmatch(rf"(?:\d{{1,3}}(?:{d}\d{{3}})+|\d+)(?:{g}\d+)?", s):
            raise bad("separators of the other locale")
        raise bad("separators out of place")
    if not integer and re.fullmatch(rf"\d{{1,3}}[{g}{d}]\d{{3}}", s):
        raise bad("ambiguous: one separator before three digits reads as thousands in one locale and "
                  "as decimals in the other")
    value = float(sign + m.group(1).replace(group, "") + ("." + m.group(2) if not integer and m.group(2)
                                                          else ""))
    return value


def check_plausible(field: str, value: float, last: Optional[float], factor: float, text: str = "") -> None:
    """Refuse ``value`` when it is more than ``factor`` times (or less than 1/``factor`` of) ``last``.

    Off when ``factor`` is 0 or there is no positive last value; zero and negative values are not
    compared (a knock-out's 0.00, a loss).
    """
    if not factor or last is None or not (last > 0) or not (value > 0) or not math.isfinite(value):
        return
    ratio = value / last
    if ratio > factor or ratio < 1.0 / factor:
        raise ImplausibleNumber(f"{field}: {value:,.2f} is {ratio:.3g} x the last known {last:,.2f} "
                                f"(plausibility_factor {factor:g}); refused as a likely misread",
                                field, text or f"{value}", "")


def format_number(value: float, decimals: int = 2, locale: str = "de") -> str:
    """Format ``value`` with thousands separators in ``locale`` (inverse of :func:`parse_number`)."""
    s = f"{value:,.{decimals}f}"
    if locale == "de":
        s = s.replace(",", "\x00").replace(".", ",").replace("\x00", ".")
    return s
