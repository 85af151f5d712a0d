"""The ``mltrade`` command. Sub-commands live in ``mltrade/commands/``, one module each.

Every module there defines ``register(subparsers)``; modules that share a
group (``train dqn``, ``train ncp``) get it from :func:`subcommand_group`.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
from typing import List, Optional

import mltrade  # sets TF_CPP_MIN_LOG_LEVEL=2 (unless set) before anything can import TensorFlow
import mltrade.commands

_GROUPS: dict = {}


def subcommand_group(subparsers, name: str, help: str):
    """The sub-parsers of the group ``name`` (``mltrade <name> ...``), created on first use."""
    key = (id(subparsers), name)
    if key not in _GROUPS:
        parser = subparsers.add_parser(name, help=help, description=help)
        _GROUPS[key] = parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND", required=True)
    return _GROUPS[key]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mltrade", description=mltrade.__doc__)
    parser.add_argument("--version", action="version", version=f"mltrade {mltrade.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", dest="global_verbose",
                        help="log debug messages and show TensorFlow's own lines (also after the sub-command)")
    parser.add_argument("-q", "--quiet", action="store_true", dest="global_quiet",
                        help="no progress bars, warnings and errors only (also after the sub-command)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(mltrade.commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"mltrade.commands.{info.name}")
        module.register(sub)
    _every_subcommand(parser)
    return parser


#: dest -> flag of every count flag (checked after parsing: at least 1)
_COUNT_FLAGS: dict = {}
#: dest -> (flag, lowest value, what is expected) of the other numeric flags
_NUMBER_FLAGS = {"speed": ("--speed", 0.0, "a number >= 0 (0 = no waiting)"),
                 "timeout": ("--timeout", 1e-9, "a positive number of seconds")}


def check_numbers(args) -> Optional[str]:
    """The error for the first count flag below 1 (or numeric flag out of range), else ``None``."""
    parsers = {int(k[len("_parser_"):]) for k in vars(args) if k.startswith("_parser_")}
    for (pid, dest), (flag, lo) in _COUNT_FLAGS.items():
        v = getattr(args, dest, None)
        if pid in parsers and v is not None and v < lo:
            what = "a positive integer (a count, at least 1)" if lo else "a whole number >= 0"
            return f"{flag}: expected {what}, got {v}"
    for dest, (flag, lo, what) in _NUMBER_FLAGS.items():
        v = getattr(args, dest, None)
        if isinstance(v, (int, float)) and not (v >= lo):
            return f"{flag}: expected {what}, got {v}"
    return None


def _subparsers_of(parser: argparse.ArgumentParser):
    """``(name, help, parser)`` of each sub-command directly below ``parser``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, p in action.choices.items():
                yield name, helps.get(name), p


def _every_subcommand(parser: argparse.ArgumentParser) -> None:
    """Give every sub-command a description (its help line when it has none) and ``-v``/``-q``, so that
    ``mltrade backtest -v`` works as ``mltrade -v backtest`` does."""
    for name, help_line, p in _subparsers_of(parser):
        if not p.description and help_line:
            p.description = help_line[:1].upper() + help_line[1:] + "."
        opts = p._option_string_actions
        for a in p._actions:   # every whole-number flag but a seed is a count: at least 1
            if a.type is int and a.option_strings and "seed" not in a.dest:
                # a count: at least 1 (at least 0 where the help gives 0 a meaning, e.g. "0 = one per CPU core")
                _COUNT_FLAGS[(id(p), a.dest)] = (a.option_strings[-1], 0 if "0 = " in (a.help or "") else 1)
        p.set_defaults(**{f"_parser_{id(p)}": True})
        if "-v" not in opts and "--verbose" not in opts:
            p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
        if "--quiet" in opts and "-q" not in opts:
            opts["--quiet"].option_strings.insert(0, "-q")
            opts["-q"] = opts["--quiet"]
        elif "--quiet" not in opts and "-q" not in opts:
            p.add_argument("-q", "--quiet", action="store_true", help="no progress bars; warnings and errors only")
        _every_subcommand(p)


from mltrade.tfquiet import (VERBOSE_ENV, _QuietLoader, _QuietTensorFlowFinder, _RetracingFilter,  # noqa: F401
                             _stderr_fd_silenced, quiet_tensorflow)


def _end_progress_bars() -> None:
    """Close open tqdm bars, so an error starts on its own line."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return
    for bar in list(getattr(tqdm, "_instances", ())):
        try:
            bar.close()
        except Exception:  # pragma: no cover - a bar of a dead thread
            pass


def _located(msg: str, args) -> str:
    """``msg`` with the config file, [section] and key in front when it starts with a key the user set
    (``ratio: expected ...`` -> ``my.toml [product] ratio: expected ...``)."""
    name = msg.split(":", 1)[0].strip()
    if not name.isidentifier() or "[" in msg.split(":", 1)[0]:
        return msg
    try:
        from mltrade.config_sources import locate, sources
        place = locate(name, sources(getattr(args, "config", None)))
    except Exception:   # the message stands on its own when the config cannot be read again
        return msg
    return f"{place}{msg[len(name):]}" if place else msg


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``mltrade`` console script."""
    _GROUPS.clear()
    _COUNT_FLAGS.clear()
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    from mltrade.commands._help import specific_help
    if specific_help(argv):
        return 0
    args = parser.parse_args(argv)
    args.verbose = bool(getattr(args, "verbose", False) or args.global_verbose)
    args.quiet = bool(getattr(args, "quiet", False) or args.global_quiet)
    if hasattr(args, "no_progress"):
        args.no_progress = bool(args.no_progress or args.quiet)
    bad = check_numbers(args)
    if bad:
        print(f"mltrade: error: {bad}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # matplotlib's one-off font-cache INFO line (and its font-matching DEBUG lines, even with -v); HTTP
    # clients' per-request and retry lines unless -v
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    if not args.verbose:
        for name in ("openai", "httpx", "httpcore", "urllib3"):
            logging.getLogger(name).setLevel(logging.WARNING)
    if args.verbose:
        os.environ[VERBOSE_ENV] = "1"      # workers this command starts show TensorFlow's lines too
    quiet_tensorflow(verbose=args.verbose)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        _end_progress_bars()
        print(f"mltrade: error: {_located(str(exc), args)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mltrade: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
