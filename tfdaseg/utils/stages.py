"""Stages of a driver script that each run one public command, skipped once finished the same way.

`tools/run_demo.py` and the benches on the demo data run the converters, `tfdaseg.train` and the
other commands as processes; a re-run should not start again what already finished.
"""

import dataclasses
import hashlib
import os
import subprocess
import sys
import time
import uuid

from absl import logging

from tfdaseg.utils.files import atomic_write_json, read_json


def _run(stage: str, argv: list[str]) -> None:
  """Runs one public command, streaming its output, and fails loudly with the stage's name."""
  logging.info("[%s] %s", stage, " ".join(argv))
  start = time.time()
  # TensorFlow's C++ INFO lines (oneDNN, CUDA probing) of every stage would bury the progress;
  # warnings and errors still show, and a value the user set wins.
  env = {"TF_CPP_MIN_LOG_LEVEL": "1", **os.environ}
  result = subprocess.run([sys.executable, *argv], check=False, env=env)
  if result.returncode != 0:
    raise SystemExit(f"demo stage {stage!r} failed (exit {result.returncode}): {' '.join(argv)}")
  logging.info("[%s] done in %.1f s", stage, time.time() - start)


def _flagfile_digests(argv: list[str]) -> dict[str, str]:
  """SHA-256 of each --flagfile of a command, so that an edited config re-runs its stage."""
  digests = {}
  for arg in argv:
    if arg.startswith("--flagfile="):
      path = arg.split("=", 1)[1]
      with open(path, "rb") as f:
        digests[path] = hashlib.sha256(f.read()).hexdigest()
  return digests


@dataclasses.dataclass
class Stages:
  """Runs the stages in order and skips one that already finished the same way.

  A stage is skipped when its record (`<out>/stages/<stage>.json`, written after it succeeded)
  holds the same command, the same config contents and the same runs of every earlier stage,
  and its outputs still exist; so a re-run of a finished demo starts no process, and a changed
  flag, config or re-run earlier stage redoes everything after it.

  Attributes:
    folder: Where the records are kept.
    fresh: Ignore the records and run every stage.
    upstream: Run ids of the stages so far, in order.
  """

  folder: str
  fresh: bool
  upstream: list[str] = dataclasses.field(default_factory=list)

  def run(self, stage: str, argv: list[str], outputs: list[str],
          fresh_flags: tuple[str, ...] = ()) -> None:
    """Runs (or reuses) one stage.

    Args:
      stage: Its name in the log.
      argv: The command, after the Python interpreter.
      outputs: Files or folders the stage makes; a missing one re-runs it.
      fresh_flags: Flags added to the command under --fresh (not part of what is compared).
    """
    key = {"argv": argv, "configs": _flagfile_digests(argv), "upstream": list(self.upstream)}
    record_file = os.path.join(self.folder, stage.replace(" ", "_") + ".json")
    if not self.fresh and os.path.isfile(record_file) and all(map(os.path.exists, outputs)):
      record = read_json(record_file)
      if record["key"] == key:
        logging.info("[%s] reusing its finished outputs (same command and inputs; --fresh redoes "
                     "it)", stage)
        self.upstream.append(record["run_id"])
        return
    _run(stage, [*argv, *(fresh_flags if self.fresh else ())])
    run_id = uuid.uuid4().hex
    atomic_write_json(record_file, {"key": key, "run_id": run_id})
    self.upstream.append(run_id)
