"""The warm-worker protocol of bench/train_step.py, shared by its TensorFlow and torch workers.

A worker builds and warms up its step, prints one JSON line {"ready": true, ...}, then for every
line N read from stdin runs N steps and prints {"times": [seconds, ...]}; it ends at EOF. Plain
Python only: the torch worker runs in a venv without tfdaseg or TensorFlow.
"""

import json
import sys
import time
from typing import Callable


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
