#!/usr/bin/env python3
"""Entry point for `mltrade train` without the installed console script: python scripts/train.py [ARGS...]"""
import sys

from mltrade.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
