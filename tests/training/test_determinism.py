"""`--deterministic`'s restart without oneDNN's custom ops (tfdaseg.training.determinism)."""

import os
import subprocess
import sys

from tfdaseg.training import determinism

# A command that believes oneDNN's custom ops are on (this machine may have them off).
_COMMAND = """
import os, sys
from tfdaseg.training import determinism
determinism.onednn_custom_ops_enabled = lambda: True
determinism.restart_without_onednn()
print("variable", os.environ.get(determinism.ONEDNN_VARIABLE), "argv", sys.argv[1:], os.getpid())
"""


def test_restart_keeps_the_command_line_and_turns_onednn_off():
  env = {k: v for k, v in os.environ.items() if k != determinism.ONEDNN_VARIABLE}
  result = subprocess.run([sys.executable, "-c", _COMMAND, "--flagfile=x.cfg", "--deterministic"],
                          env=env, capture_output=True, text=True, timeout=300, check=True)
  assert "variable 0 argv ['--flagfile=x.cfg', '--deterministic']" in result.stdout
  # In the restarted process the variable is set: it warns and goes on, it does not loop.
  assert "oneDNN's custom ops stay on" in result.stderr
