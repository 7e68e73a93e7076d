"""Exporting trained generators: SavedModel (serving.py), .keras and TFLite (exporter.py).

`tfdaseg-export` / `python -m tfdaseg.export` is cli.py; `run` and `main` here import it only
when called, so using the library does not define the command's flags.
"""


def main(argv: list[str]) -> None:
  """The command's main (cli.main)."""
  from tfdaseg.export import cli

  cli.main(argv)


def run() -> None:
  """Console-script entry point `tfdaseg-export=tfdaseg.export:run`."""
  from tfdaseg.export import cli

  cli.run()
