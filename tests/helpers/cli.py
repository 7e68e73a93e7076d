"""Runs a command's absl `main` in the test process, as `app.run` would, with its flags reset after."""

from typing import Any, Callable

from absl import flags


def run_cli(main: Callable[[list[str]], Any], argv: list[str],
            flag_values: flags.FlagValues | None = None) -> Any:
  """Parses `argv` into the command's flags like `app.run`, calls `main`, unparses the flags.

  Args:
    main: The command's `main(argv)`.
    argv: The command line, program name first.
    flag_values: The command's own `FlagValues` (tfdaseg.train and the tools have one); the
      global absl flags when None.

  Returns:
    What `main` returns.
  """
  values = flags.FLAGS if flag_values is None else flag_values
  remaining = values(argv)
  try:
    return main(remaining)
  finally:
    values.unparse_flags()
