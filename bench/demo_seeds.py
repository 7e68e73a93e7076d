"""The demo's adaptation gain over several seeds, in one run: mean and spread.

Runs the whole demo (`tools/run_demo.py`: data, conversion, both trainings, evaluation) once per
seed, each in its own folders, and prints per-seed mIoUs, then one JSON line:
{"bench": "demo_seeds", "seeds": [...], "gain_mean": ..., "gain_std": ..., "gain_min": ...}.
Expect about 15 minutes per seed on 2 CPU cores.

Usage:
  python bench/demo_seeds.py [--seeds=0,1,2] [--root=bench_out/demo_seeds]
"""

import json
import os
import subprocess
import sys

import numpy as np
from absl import app, flags

_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (data and training) to run.")
_ROOT = flags.DEFINE_string("root", "bench_out/demo_seeds", "Folder for each seed's data and runs.")
_TRAIN_FLAGS = flags.DEFINE_list(
    "train_flags", [], "Extra training flags for every run (tools/run_demo.py --train_flags), e.g. "
    "--train_flags=--mixed_precision=mixed_bfloat16 with its own --root.")

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_seed(seed: int, root: str) -> dict:
  """Runs the demo with `seed` and returns its report.json."""
  out = os.path.join(root, f"seed{seed}", "out")
  data = os.path.join(root, f"seed{seed}", "data")
  subprocess.run([sys.executable, os.path.join(_REPO, "tools", "run_demo.py"), f"--seed={seed}",
                  f"--out={out}", f"--data={data}",
                  f"--train_flags={','.join(_TRAIN_FLAGS.value)}"], check=True, cwd=_REPO)
  with open(os.path.join(_REPO, out, "report.json")) as f:
    return json.load(f)


def main(argv: list[str]) -> None:
  del argv
  seeds = [int(s) for s in _SEEDS.value]
  reports = {seed: run_seed(seed, _ROOT.value) for seed in seeds}
  gains = np.array([reports[s]["gain_miou"] for s in seeds]) * 100
  for seed in seeds:
    report = reports[seed]
    print(f"seed {seed}: source-only {report['source_only']['target_miou'] * 100:.1f}, "
          f"adapted {report['adapted']['target_miou'] * 100:.1f}, "
          f"gain {report['gain_miou'] * 100:+.1f}")
  print(json.dumps({
      "bench": "demo_seeds", "seeds": seeds,
      "source_only_miou": [round(reports[s]["source_only"]["target_miou"] * 100, 2) for s in seeds],
      "adapted_miou": [round(reports[s]["adapted"]["target_miou"] * 100, 2) for s in seeds],
      "elapsed_s": [reports[s]["elapsed_s"] for s in seeds],
      "gain_mean": round(float(gains.mean()), 2), "gain_std": round(float(gains.std(ddof=1)), 2)
      if len(seeds) > 1 else 0.0, "gain_min": round(float(gains.min()), 2)}))


if __name__ == "__main__":
  app.run(main)
