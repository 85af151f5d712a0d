#!/usr/bin/env python3
"""Entry point for `mltrade backtest` without the installed console script: python scripts/backtest.py [ARGS...]"""
import sys

from mltrade.cli import main

if __name__ == "__main__":
    sys.exit(main(["backtest", *sys.argv[1:]]))
