"""`python -m controller` runs the `phalanx` command line."""

from controller.cli import app

app()
