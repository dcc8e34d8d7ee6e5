"""``python -m dejavu``: the command line."""
from dejavu.cli import run

run()
