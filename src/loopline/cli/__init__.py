"""Layer L7: the ``loopline`` command line (typer + rich), one module per command group."""
