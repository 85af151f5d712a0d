"""Venue credentials (environment or OS keyring), 2FA code sources and secret masking.

Secrets never reach a log line: every value handed out by
:func:`load_credentials` is registered with :func:`register_secret`, and the
filter installed on the ``mltrade.live`` logger replaces it with ``***`` in
any record. :func:`mask` does the same for page sources saved on failures.
"""
from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Set

_SECRETS: Set[str] = set()
_LOCK = threading.Lock()
MASK = "***"


_PATTERN: Optional["re.Pattern[str]"] = None
#: what may stand between the characters of a secret that is logged one character per list item
#: (Selenium's debug log of send_keys: ``'value': ['s', '3', ...]``; JSON ``["s", "3", ...]``)
_GAP = r"(?:['\"]?\s*,\s*['\"]?)?"
#: text typed into a page, as Selenium's wire log prints it (masked whatever it is)
_TYPED = re.compile(r"""(['"](?:text|value)['"]\s*:\s*)(\[[^\]]*\]|'[^']*'|"[^"]*")""")


def register_secret(value: Optional[str]) -> None:
    """Remember ``value`` so that logs and saved pages mask it (ignores values shorter than 3 chars)."""
    global _PATTERN
    if value and len(value) >= 3:
        with _LOCK:
            if value not in _SECRETS:
                _SECRETS.add(value)
                _PATTERN = None


def _pattern() -> Optional["re.Pattern[str]"]:
    global _PATTERN
    with _LOCK:
        if _PATTERN is None and _SECRETS:
            alts = [_GAP.join(re.escape(c) for c in s) for s in sorted(_SECRETS, key=len, reverse=True)]
            _PATTERN = re.compile("|".join(alts))
        return _PATTERN


def mask(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``, also when its characters are
    listed one by one (``'s', '3', 'c', ...``), and with typed text in Selenium wire logs blanked."""
    if not text:
        return text
    if "text" in text or "value" in text:
        text = _TYPED.sub(lambda m: m.group(1) + repr(MASK), text)
    pat = _pattern()
    return pat.sub(MASK, text) if pat is not None else text


def first_line(e: BaseException) -> str:
    """The first line of ``e``'s message (its type's name when empty), secrets masked."""
    return mask(str(e).splitlines()[0] if str(e) else type(e).__name__)


class SecretFilter(logging.Filter):
    """Logging filter that masks registered secrets in the message and its arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # pragma: no cover - malformed record: leave as is
            return True
        masked = mask(msg)
        if masked != msg or record.args:
            record.msg, record.args = masked, None
        return True


def protect_handlers(logger: Optional[logging.Logger] = None) -> None:
    """Attach :class:`SecretFilter` to every handler of ``logger`` (root by default), so records of any
    logger (Selenium, urllib3, ...) are masked before they are written (idempotent)."""
    for h in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, SecretFilter) for f in h.filters):
            h.addFilter(SecretFilter())


def install_log_filter(logger_name: str = "mltrade.live") -> None:
    """Attach :class:`SecretFilter` to ``logger_name`` (idempotent)."""
    lg = logging.getLogger(logger_name)
    if not any(isinstance(f, SecretFilter) for f in lg.filters):
        lg.addFilter(SecretFilter())


#: loggers that may carry typed secrets: ours, and Selenium's wire log (DEBUG shows send_keys payloads)
MASKED_LOGGERS = ("mltrade.live", "selenium.webdriver.remote.remote_connection", "selenium")
for _name in MASKED_LOGGERS:
    install_log_filter(_name)


@dataclass(frozen=True)
class Credentials:
    """Username and password for a venue; ``repr`` never shows them."""

    username: str
    password: str

    def __repr__(self) -> str:
        return "Credentials(username=***, password=***)"

    __str__ = __repr__


def load_credentials(venue: str, env: Optional[Mapping[str, str]] = None) -> Credentials:
    """Credentials from ``MLTRADE_<VENUE>_USERNAME``/``_PASSWORD`` or the OS keyring.

    Keyring entries: service ``mltrade-<venue>``, users ``username`` and ``password``
    (only if the optional ``keyring`` package is installed).
    """
    env = os.environ if env is None else env
    key = venue.upper()
    user, pw = env.get(f"MLTRADE_{key}_USERNAME"), env.get(f"MLTRADE_{key}_PASSWORD")
    if not (user and pw):
        try:
            import keyring  # type: ignore[import-not-found]
        except ImportError:
            keyring = None
        if keyring is not None:
            user = user or keyring.get_password(f"mltrade-{venue}", "username")
            pw = pw or keyring.get_password(f"mltrade-{venue}", "password")
    if not (user and pw):
        raise RuntimeError(f"credentials for {venue!r}: set MLTRADE_{key}_USERNAME and "
                           f"MLTRADE_{key}_PASSWORD "
                           f"or store them in the OS keyring (service 'mltrade-{venue}')")
    register_secret(user)
    register_secret(pw)
    return Credentials(user, pw)


def code_source(spec: str, timeout: float = 120.0) -> Callable[[], str]:
    """A callable returning the current 2FA code, from ``spec``.

    ``prompt`` (ask on the terminal), ``file:PATH`` (wait for the file, read and
    delete it), ``command:CMD`` (run CMD, use its stdout), ``env:NAME``.
    """
    kind, _, arg = spec.partition(":")
    if kind == "prompt":
        def _prompt() -> str:
            import getpass
            code = getpass.getpass("2FA code: ").strip()
            register_secret(code)
            return code
        return _prompt
    if kind == "file":
        if not arg:
            raise ValueError("code source 'file:PATH': the path is missing")

        def _file() -> str:
            p = Path(arg)
            end = time.monotonic() + timeout
            while not p.exists():
                if time.monotonic() > end:
                    raise TimeoutError(f"2FA code file {p} did not appear within {timeout:.0f} s")
                time.sleep(0.2)
            code = p.read_text(encoding="utf-8").strip()
            p.unlink(missing_ok=True)   # a code is single-use
            register_secret(code)
            return code
        return _file
    if kind == "command":
        if not arg:
            raise ValueError("code source 'command:CMD': the command is missing")

        def _command() -> str:
            out = subprocess.run(shlex.split(arg), capture_output=True, text=True, timeout=timeout,
                                 check=True)
            code = out.stdout.strip()
            register_secret(code)
            return code
        return _command
    if kind == "env":
        def _env() -> str:
            code = os.environ.get(arg, "").strip()
            if not code:
                raise RuntimeError(f"2FA code: environment variable {arg!r} is empty")
            register_secret(code)
            return code
        return _env
    raise ValueError(f"2FA code source: expected prompt | file:PATH | command:CMD | env:NAME, got {spec!r}")
