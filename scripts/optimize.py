#!/usr/bin/env python3
"""Entry point for `mltrade optimize` without the installed console script: python scripts/optimize.py [ARGS...]"""
import sys

from mltrade.cli import main

if __name__ == "__main__":
    sys.exit(main(["optimize", *sys.argv[1:]]))
