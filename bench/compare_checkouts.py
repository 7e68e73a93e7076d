"""The training step of two checkouts of tfdaseg, interleaved: is a change faster or slower?

Runs `bench/train_step.py` of checkout A, then of checkout B, then A, B, ... (`--rounds` rounds,
each run its own process with PYTHONPATH at its checkout), and reports per configuration the
per-round ratios s/step(A) / s/step(B) (> 1: B is faster), their median and spread. Alternating
whole runs keeps slow drifts of a noisy machine out of the ratio.

Usage (A = the baseline, e.g. a `git worktree add /tmp/base <commit>`):
  python bench/compare_checkouts.py --a=/tmp/base --b=. [--rounds=3] \
      [--bench_flags="--quick --precisions=fp32,bf16"]
Prints one JSON line per configuration:
  {"bench": "compare_checkouts", "precision": "fp32", ..., "ratios": [...], "ratio_median": ...}
"""

import json
import os
import shlex
import statistics
import subprocess
import sys

from absl import app, flags, logging

_A = flags.DEFINE_string("a", None, "Checkout A (the baseline).", required=True)
_B = flags.DEFINE_string("b", ".", "Checkout B (the change).")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "A-B rounds.")
# A shell-quoted string, not a comma list: the bench's own flags take comma lists.
_BENCH_FLAGS = flags.DEFINE_string("bench_flags", "--quick --steps=3 --warmup=1",
                                   "Flags of bench/train_step.py for both sides, as one "
                                   "shell-quoted string.")


def run_side(checkout: str) -> dict[tuple, float]:
  """Runs checkout's bench/train_step.py; returns (precision, xla, replicas, deterministic, method) -> s/step."""
  checkout = os.path.abspath(checkout)
  env = {**os.environ, "PYTHONPATH": checkout}
  result = subprocess.run([sys.executable, os.path.join(checkout, "bench", "train_step.py"),
                           *shlex.split(_BENCH_FLAGS.value)], cwd=checkout, env=env, check=True,
                          stdout=subprocess.PIPE, text=True)
  records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
  return {(r["precision"], r["xla"], r["replicas"], r.get("deterministic", False),
           r.get("method", "adaptsegnet")): r["s_per_step_median"]
          for r in records if r.get("bench") == "train_step"}


def main(argv: list[str]) -> None:
  del argv
  rounds = []
  for index in range(_ROUNDS.value):
    a, b = run_side(_A.value), run_side(_B.value)
    rounds.append((a, b))
    logging.info("round %d/%d: A %s, B %s", index + 1, _ROUNDS.value, a, b)
  for key in rounds[0][0]:
    ratios = [round(a[key] / b[key], 3) for a, b in rounds]
    print(json.dumps({
        "bench": "compare_checkouts", "precision": key[0], "xla": key[1], "replicas": key[2],
        "deterministic": key[3], "method": key[4],
        "a": os.path.abspath(_A.value), "b": os.path.abspath(_B.value),
        "a_s_per_step": [a[key] for a, _ in rounds], "b_s_per_step": [b[key] for _, b in rounds],
        "ratios": ratios, "ratio_median": statistics.median(ratios),
        "ratio_spread": round(max(ratios) - min(ratios), 3)}), flush=True)


if __name__ == "__main__":
  app.run(main)
