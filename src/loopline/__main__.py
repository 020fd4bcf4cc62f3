"""``python -m loopline`` runs the command line."""

from loopline.cli.main import run

run()
