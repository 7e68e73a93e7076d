"""Running an absl app whose flags live in their own `FlagValues`.

Several commands define flags with the same names (`--model_dir`, `--output_dir`, ...); keeping
each command's flags in its own `FlagValues` lets their modules be imported into one process
(tests, the demo) without clashes. At run time they join absl's global flags, so `--help` and
`--flagfile` work as usual.
"""

import sys
from typing import Callable, Sequence

from absl import app, flags


def command_name(main: Callable) -> str:
  """The dotted name a user runs (`tfdaseg.evaluate`), also under `python -m`."""
  module = main.__module__
  if module == "__main__":
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    module = spec.name if spec else module
  return module


def _parse(argv: list[str], flag_values: flags.FlagValues, command: str) -> list[str]:
  # A flagfile that cannot be read, or a flag that does not parse: one line, not a traceback.
  try:
    return flag_values(argv)
  except flags.Error as e:
    raise SystemExit(f"{command}: error: {str(e).replace('ERROR:: ', '')}") from None


def _one_line_errors(main: Callable[[list[str]], object], command: str) -> Callable:
  # Missing inputs end with one line naming the file (our FileNotFoundErrors name it).
  def guarded(argv: list[str]):
    try:
      return main(argv)
    except FileNotFoundError as e:
      raise SystemExit(f"{command}: error: {e}") from None
  return guarded


def join_flags(flag_values: flags.FlagValues, into: flags.FlagValues) -> None:
  """Adds a command's own flags to `into` (absl's global flags) with their defining modules.

  Args:
    flag_values: The command's flags.
    into: Where they join; `--helpfull` lists its flags by the module that defined them, which
      `append_flag_values` alone does not carry over.
  """
  into.append_flag_values(flag_values)
  for module, defined in flag_values.flags_by_module_dict().items():
    for flag in defined:
      into.register_flag_by_module(module, flag)


def run_app(main: Callable[[list[str]], None], flag_values: flags.FlagValues) -> None:
  """Runs `main` under `absl.app` with `flag_values` parsed from the command line.

  Args:
    main: The command's main function, taking the remaining argv.
    flag_values: The command's own flags.
  """
  join_flags(flag_values, flags.FLAGS)
  # --help lists the key flags of the main module, which absl names by its path (argv[0]),
  # also for console scripts.
  for name in flag_values:
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag_values[name])

  command = command_name(main)

  def parse(argv: list[str]) -> list[str]:
    remaining = _parse(argv, flags.FLAGS, command)
    flag_values.mark_as_parsed()
    return remaining

  app.run(_one_line_errors(main, command), flags_parser=parse)


def run_with_key_flags(main: Callable[[list[str]], object], modules: Sequence[str]) -> None:
  """Runs `main` under `absl.app` with the global flags of `modules` listed by `--help`.

  absl's `--help` lists the flags of the module it names after `sys.argv[0]`: the command's own
  file under `python -m`, and the console-script wrapper otherwise, which defines none. Flags
  shared between commands (tfdaseg.evaluation.cli_flags) are defined in neither.

  Args:
    main: The command's main function, taking the remaining argv.
    modules: Names of the modules whose flags the command reads.
  """
  for module in modules:
    for flag in flags.FLAGS.get_key_flags_for_module(module):
      flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  command = command_name(main)
  app.run(_one_line_errors(main, command),
          flags_parser=lambda argv: _parse(argv, flags.FLAGS, command))
