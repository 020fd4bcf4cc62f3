"""``python -m loopline`` runs the command line."""

from loopline.cli.main import run

if __name__ == "__main__":  # spawned worker processes import this module without running it
    run()
