"""Parse numbers as venues print them (German ``1.234,56 €``, English ``1,234.56``)."""
from __future__ import annotations

import re

_CLEAN = re.compile(r"[^0-9,.\-+]")


def parse_number(text: str, locale: str = "de", field: str = "number") -> float:
    """Parse ``text`` as printed in ``locale`` ("de": ``.`` thousands, ``,`` decimal; "en": the reverse).

    Currency signs, ``x``/``%`` suffixes, spaces and the Unicode minus are ignored.
    Raises ``ValueError`` naming ``field`` and the text when no number can be read.
    """
    if text is None:
        raise ValueError(f"{field}: expected a number, got None")
    raw = str(text)
    s = raw.replace("\u2212", "-").replace("\u00a0", " ").replace("\u202f", " ")
    s = _CLEAN.sub("", s)
    if locale == "de":
        s = s.replace(".", "").replace(",", ".")
    elif locale == "en":
        s = s.replace(",", "")
    else:
        raise ValueError(f"locale: expected 'de' or 'en', got {locale!r}")
    if s in ("", "-", "+", ".") or s.count(".") > 1 or "-" in s[1:] or "+" in s[1:]:
        raise ValueError(f"{field}: expected a number in {locale!r} format (e.g. "
                         f"{'1.234,56' if locale == 'de' else '1,234.56'}), got {raw!r}")
    return float(s)


def format_number(value: float, decimals: int = 2, locale: str = "de") -> str:
    """Format ``value`` with thousands separators in ``locale`` (inverse of :func:`parse_number`)."""
    s = f"{value:,.{decimals}f}"
    if locale == "de":
        s = s.replace(",", "\x00").replace(".", ",").replace("\x00", ".")
    return s
