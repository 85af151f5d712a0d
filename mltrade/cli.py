"""The ``mltrade`` command. Sub-commands live in ``mltrade/commands/``, one module each.

Every module there defines ``register(subparsers)``; modules that share a
group (``train dqn``, ``train ncp``) get it from :func:`subcommand_group`.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from typing import List, Optional

import mltrade
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
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(mltrade.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"mltrade.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``mltrade`` console script."""
    _GROUPS.clear()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"mltrade: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mltrade: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
