"""`python -m tfdaseg.export` (see cli.py)."""

from tfdaseg.export.cli import run

run()
