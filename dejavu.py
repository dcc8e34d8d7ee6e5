#!/usr/bin/env python3
"""Run the dejavu command line from a source checkout: ``python dejavu.py --help``."""
from dejavu.cli import run

if __name__ == "__main__":
    run()
