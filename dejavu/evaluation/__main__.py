"""``python -m dejavu.evaluation``: the evaluation command line (``dejavu-eval``)."""
from dejavu.evaluation.cli import run

if __name__ == "__main__":
    run()
