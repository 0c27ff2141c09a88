#!/usr/bin/env python
"""Seed-compatible entry point: `python train.py ...` is `finsent train ...`."""

import sys

from finsent.apps.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
