"""bench/memory.py: one child measures a tiny configuration and reports a positive peak."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The plain supervised step: its trace is a fraction of the DACS step's (the bench's default).
CONFIG = "configs/gta5_to_cityscapes/source_only.cfg"


def test_a_child_reports_the_memory_of_a_tiny_step():
  argv = [sys.executable, os.path.join(ROOT, "bench", "memory.py"), "--child=fp32,True",
          "--variant=b0", "--input_size=64", "--batch=1", "--warmup=0", f"--config={CONFIG}",
          # source_only.cfg is DeepLab-v2's multi-level CE; the MiT has one output.
          "--override=--levels=single", "--override=--lambda_seg=0"]
  result = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
                          env={**os.environ, "PYTHONPATH": ROOT})
  assert result.returncode == 0, result.stderr[-3000:]
  record = json.loads(result.stdout.strip().splitlines()[-1])
  assert record["method"] == "source_only" and record["device"] == "CPU"
  assert record["memory"] == "VmHWM after reset"
  assert record["built_mib"] > 0 and record["peak_mib"] > 0
  # The peak is the step's: at least what the process held before it.
  assert record["peak_mib"] >= record["before_step_mib"]
  assert record["step_mib"] > 0
  assert record["loss"] > 0
