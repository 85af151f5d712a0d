#!/usr/bin/env python3
"""Entry point for `mltrade live` without the installed console script: python scripts/live.py [ARGS...]"""
import sys

from mltrade.cli import main

if __name__ == "__main__":
    sys.exit(main(["live", *sys.argv[1:]]))
