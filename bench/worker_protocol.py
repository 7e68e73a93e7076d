"""The warm-worker protocol of the step benches: the worker's side (`serve`) and the driver's
(`Worker`), plus the machine description every bench records (`environment`).

A worker builds and warms up its step, prints one JSON line {"ready": true, ...}, then for every
line N read from stdin runs N steps and prints {"times": [seconds, ...]}; it ends at EOF. Any
other line it prints (a library's log, oneDNN's verbose lines) is not part of the protocol; the
driver may collect it. Plain Python only: the torch worker runs in a venv without tfdaseg,
TensorFlow or absl.
"""

import json
import logging
import os
import platform
import subprocess
import sys
import time
from typing import Callable, Mapping

_REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def serve(step: Callable[[], object], info: dict) -> None:
  """Serves timed steps on stdin/stdout.

  Args:
    step: Runs one training step (synchronously).
    info: What the ready line reports (versions, threads).
  """
  print(json.dumps({"ready": True, **info}), flush=True)
  for line in sys.stdin:
    times = []
    for _ in range(int(line)):
      started = time.perf_counter()
      step()
      times.append(time.perf_counter() - started)
    print(json.dumps({"times": times}), flush=True)


class Worker:
  """A warm benchmark process speaking the ready / N-steps protocol, driven from a bench.

  The worker runs from the bench's own checkout and imports its tfdaseg first: a bench started
  from a `git worktree` measures that worktree, not the checkout `pip install -e` points at.

  Args:
    name: Shown in the progress lines.
    argv: The worker's command line (run from the repository's root).
    env: Extra environment variables of the worker.
    on_output: Called with every non-protocol line the worker prints while it is timed.
  """

  def __init__(self, name: str, argv: list[str], env: Mapping[str, str] | None = None,
               on_output: Callable[[str], None] | None = None):
    self.name = name
    logging.info("starting %s: %s", name, " ".join(argv))
    environ = {**os.environ, **(env or {})}
    environ["PYTHONPATH"] = os.pathsep.join(
        [_REPOSITORY, *filter(None, [environ.get("PYTHONPATH")])])
    self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    text=True, cwd=_REPOSITORY, env=environ)
    self._on_output = None
    self.info = self._read()
    self._on_output = on_output
    logging.info("%s ready: %s", name, self.info)

  def _read(self) -> dict:
    for line in self.process.stdout:
      if line.startswith("{"):
        return json.loads(line)
      if self._on_output is not None:
        self._on_output(line)
    raise RuntimeError(f"benchmark worker {self.name} ended (exit {self.process.wait()})")

  def time_steps(self, steps: int) -> list[float]:
    """Runs `steps` steps in the worker; returns each one's seconds."""
    self.process.stdin.write(f"{steps}\n")
    self.process.stdin.flush()
    return self._read()["times"]

  def close(self) -> None:
    self.process.stdin.close()
    self.process.wait()


def environment() -> dict:
  """The machine and settings a ratio was measured on."""
  cpu, cpu_flags = platform.processor(), set()
  if os.path.exists("/proc/cpuinfo"):
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
          cpu = value.strip()
        elif key.strip() == "flags":
          cpu_flags = set(value.split())
  wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")
  return {"bench": "environment", "cpu": cpu, "cores": os.cpu_count(),
          "cpu_flags": [f for f in wanted if f in cpu_flags], "python": platform.python_version(),
          "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "TF_ENABLE_ONEDNN_OPTS",
                                             "TF_NUM_INTEROP_THREADS", "TF_NUM_INTRAOP_THREADS")
                  if k in os.environ}}
