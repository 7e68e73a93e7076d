"""Where a training step's time goes, tfdaseg against the PyTorch reference: oneDNN kernels or not.

On a CPU both frameworks run their convolutions, BatchNorm and layout reorders through oneDNN,
which prints every primitive's execution time with ONEDNN_VERBOSE=1. This bench runs the steps of
`bench/train_step.py` (multi-level AdaptSegNet, DeepLab-v2 R101, reference BN mode, batch 1 + 1)
in its warm workers with that variable set, interleaved over `--rounds`, and splits each side's
step into: convolution forward, backward-data and backward-weights, matmuls (the filter
gradients that tfdaseg/models/stride_one_conv.py takes as matmuls; float32 ones print as oneDNN's
sgemm API, `gemm_api`), reorders, BatchNorm, other oneDNN primitives, and the rest (framework
ops outside oneDNN, the optimisers, dispatch).
GFLOP/s come from the problem shapes in the log (nominal FLOPs: convolution taps that fall in the
padding count).

The TensorFlow workers run with one inter-op thread (TF_NUM_INTEROP_THREADS=1): with two, two
primitives share the cores at once and their times overlap, so they would not add up to the
step. The torch reference runs its ops one at a time anyway.

`ceiling_speedup` (tfdaseg lines): the reference's s/step over tfdaseg's convolution and matmul
time per step: the speedup tfdaseg would have if everything but those kernels took no time. A goal
above it needs faster kernels, not a leaner step. Verbose logging slows both sides a
little; the bench's ratios come from `bench/train_step.py`, this one says where the time goes.

Prints progress, then one JSON line per side:
  {"bench": "onednn_breakdown", "side": "tfdaseg fp32", "s_per_step": ...,
   "ms_per_step": {"conv_forward": ..., ..., "rest": ...}, "gflops": {...}, ...}
and a table of the same numbers.

Usage: python bench/onednn_breakdown.py [--torch_python=PYTHON] [--precisions=fp32,bf16]
                                        [--rounds=2] [--steps=2] [--size=320x160]
"""

import collections
import json
import os
import re
import statistics
import sys

from absl import app, flags, logging

from worker_protocol import Worker, environment  # bench/, the script's folder

_TORCH_PYTHON = flags.DEFINE_string("torch_python", None, "A Python with torch: adds the "
                                    "reference's side and the ceiling speedups.")
_PRECISIONS = flags.DEFINE_list("precisions", ["fp32", "bf16"], "tfdaseg precisions (fp32, bf16).")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Interleaved rounds.", lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", 2, "Steps per side and round.", lower_bound=1)
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed steps after tracing.", lower_bound=0)
_SIZE = flags.DEFINE_string("size", "320x160", "WxH of source and target images.")

_HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE = "torch reference fp32"
# oneDNN's convolution propagation kinds -> the row they are reported in.
CONV_ROWS = {"forward_training": "conv_forward", "forward_inference": "conv_forward",
             "backward_data": "conv_backward_data", "backward_weights": "conv_backward_weights"}
# The matmul primitive, and the sgemm API that TensorFlow 2.21's float32 MatMul calls.
MATMUL_KINDS = ("matmul", "gemm_api")
# The rows whose FLOPs are counted: the step's arithmetic.
ARITHMETIC_ROWS = (*dict.fromkeys(CONV_ROWS.values()), "matmul")
ROWS = (*ARITHMETIC_ROWS, "reorder", "batch_normalization", "other_onednn", "rest")
_SHAPE_FIELD = re.compile(r"([a-z]+)(\d+)")


def convolution_flops(problem: str) -> int:
  """Nominal multiply-add FLOPs of one oneDNN convolution from its verbose problem descriptor.

  Args:
    problem: e.g. "mb1_ic256oc256_ih21oh21kh3sh1dh1ph2_iw41ow41kw3sw1dw1pw2" (2-D) or with
      "g" (groups) and "id/od/kd" (3-D) fields.

  Returns:
    2 * minibatch * output channels * output pixels * input channels per group * kernel taps.
  """
  fields = {key: int(value) for key, value in _SHAPE_FIELD.findall(problem)}
  taps = fields.get("kd", 1) * fields.get("kh", 1) * fields.get("kw", 1)
  pixels = fields.get("od", 1) * fields.get("oh", 1) * fields.get("ow", 1)
  return 2 * fields["mb"] * fields["oc"] * pixels * fields["ic"] // fields.get("g", 1) * taps


def matmul_flops(problem: str) -> int:
  """FLOPs of one oneDNN matmul from its verbose problem descriptor.

  Args:
    problem: "MxK:KxN", with leading batch dimensions on both sides where batched.

  Returns:
    2 * (batch * M * K) * N.
  """
  source, weights = (side.split("x") for side in problem.split(":")[:2])
  count = 2 * int(weights[-1])
  for size in source:
    count *= int(size)
  return count


class PrimitiveLog:
  """Sums oneDNN verbose execution lines into the bench's rows."""

  def __init__(self):
    self.milliseconds = collections.Counter()
    self.flops = collections.Counter()

  def add(self, line: str) -> None:
    """Counts one line of a worker's output (lines that are no primitive execution are skipped)."""
    fields = line.strip().split(",")
    if len(fields) < 8 or fields[0] != "onednn_verbose" or "exec" not in fields[1:4]:
      return
    offset = fields.index("exec") + 2  # the engine ("cpu") follows "exec"; then the kind
    kind, propagation = fields[offset], fields[offset + 2]
    try:
      milliseconds = float(fields[-1])
    except ValueError:
      return
    if kind == "convolution" and propagation in CONV_ROWS:
      row = CONV_ROWS[propagation]
      self.flops[row] += convolution_flops(fields[-2])
    elif kind in MATMUL_KINDS:
      row = "matmul"
      self.flops[row] += matmul_flops(fields[-2])
    elif kind in ("reorder", "batch_normalization"):
      row = kind
    else:
      row = "other_onednn"
    self.milliseconds[row] += milliseconds


def summarise(name: str, log: PrimitiveLog, step_seconds: list[float],
              reference_s_per_step: float | None) -> dict:
  """One side's record: s/step, ms/step per row, the arithmetic's GFLOP/s, ceiling speedup."""
  steps = len(step_seconds)
  s_per_step = statistics.median(step_seconds)
  ms = {row: log.milliseconds[row] / steps for row in ROWS if row != "rest"}
  ms["rest"] = max(0.0, 1000 * statistics.mean(step_seconds) - sum(ms.values()))
  record = {"bench": "onednn_breakdown", "side": name, "steps": steps,
            "s_per_step": round(s_per_step, 4),
            "ms_per_step": {row: round(value, 1) for row, value in ms.items()},
            "gflops": {row: round(log.flops[row] / log.milliseconds[row] / 1e6, 1)
                       for row in ARITHMETIC_ROWS if log.milliseconds[row]}}
  arithmetic_seconds = sum(ms[row] for row in ARITHMETIC_ROWS) / 1000
  if reference_s_per_step is not None and name != REFERENCE and arithmetic_seconds:
    record["ceiling_speedup"] = round(reference_s_per_step / arithmetic_seconds, 3)
  return record


def table(records: list[dict]) -> str:
  """A markdown table: one column per side, one row per part of the step."""
  lines = ["| ms/step | " + " | ".join(r["side"] for r in records) + " |",
           "|---" * (len(records) + 1) + "|"]
  for row in ROWS:
    lines.append(f"| {row} | " + " | ".join(f"{r['ms_per_step'][row]:.0f}" for r in records) + " |")
  lines.append("| step (s) | " + " | ".join(f"{r['s_per_step']:.3f}" for r in records) + " |")
  if any("ceiling_speedup" in r for r in records):
    lines.append("| ceiling speedup | " + " | ".join(
        str(r.get("ceiling_speedup", "")) for r in records) + " |")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  del argv
  verbose = {"ONEDNN_VERBOSE": "1"}
  common = [f"--size={_SIZE.value}", f"--warmup={_WARMUP.value}"]
  logs, workers = {}, {}

  def start(name: str, argv: list[str], env: dict) -> None:
    logs[name] = PrimitiveLog()
    workers[name] = Worker(name, argv, env={**verbose, **env}, on_output=logs[name].add)

  if _TORCH_PYTHON.value:
    start(REFERENCE, [_TORCH_PYTHON.value, os.path.join(_HERE, "torch_reference_step.py"),
                      "--serve", *common], {})
  for precision in _PRECISIONS.value:
    start(f"tfdaseg {precision}",
          [sys.executable, os.path.join(_HERE, "train_step.py"),
           f"--worker=adaptsegnet,{precision},False,1,False", "--bn_mode=reference", *common],
          {"TF_NUM_INTEROP_THREADS": "1"})
  names = list(workers)
  seconds = {name: [] for name in names}
  for index in range(_ROUNDS.value):
    shift = index % len(names)
    for name in names[shift:] + names[:shift]:
      seconds[name].extend(workers[name].time_steps(_STEPS.value))
    logging.info("round %d/%d: %s", index + 1, _ROUNDS.value,
                 {n: round(statistics.median(s[-_STEPS.value:]), 3) for n, s in seconds.items()})
  for worker in workers.values():
    worker.close()
  reference = statistics.median(seconds[REFERENCE]) if REFERENCE in seconds else None
  print(json.dumps({**environment(), **{name: w.info for name, w in workers.items()}}),
        flush=True)
  records = [summarise(name, logs[name], seconds[name], reference) for name in names]
  for record in records:
    print(json.dumps(record), flush=True)
  print(table(records), flush=True)


if __name__ == "__main__":
  app.run(main)
