"""Target mIoU of self-training against adversarial adaptation on the demo data, over seeds.

For each seed: the demo's synthetic "game" (source) and "real" (target) street scenes
(`tools/make_demo_data.py`, converted by `tools/run_demo.py`'s stage), then one training per
method, in this process, from the flags `python -m tfdaseg.train` takes (its config parser and
runner), scored at its last step on the target val split by the trainer's validation (the
student, as DACS and DAFormer evaluate; `validation.json`). One process saves the start-up of
TensorFlow per run, which dominates at reduced sizes. Methods:
source-only, AdaptSegNet (multi-level), DACS, DACS + the thing-class feature distance, DACS +
rare class sampling + FD (DAFormer's strategies, without its network), DACS + MIC, and
DAFormer's network with a MiT-B0 encoder trained by DACS + RCS + FD (`configs/demo/daformer_b0.cfg`,
from scratch: its optimiser settings are ours). RCS's
min_pixels is DAFormer's 3000 of a 1914x1052 GTA5 label scaled to the stored size (images are
stored at --size): 3000 * W * H / (1914 * 1052).

The demo trains a small model from scratch: its "ImageNet" copy for the feature distance is the
random initialisation, so that line measures a pull towards random features, not DAFormer's.

Writes <root>/results.json, <root>/table.md and <root>/miou.png, and prints the table and one
JSON line {"bench": "self_training", "methods": {name: {"miou": [...], "mean": .., "std": ..}}}.

Usage (the full size is the demo's: 1500 + 1500 + 200 images at 128x64, 600 steps, 3 seeds):
  python bench/self_training.py [--seeds=0,1,2] [--steps=600] [--size=128x64]
      [--num_images=1500,1500,200] [--root=bench_out/self_training] [--methods=...]
"""

import json
import os
import sys
import time

import numpy as np
from absl import app, flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(_REPO, "tools"))
import run_demo  # noqa: E402  (tools/ is not a package)

from tfdaseg.training import config as train_config  # noqa: E402
from tfdaseg.training import runner  # noqa: E402
from tfdaseg.training.validation import VALIDATION_LOG  # noqa: E402
from tfdaseg.utils.files import atomic_write_bytes, atomic_write_json, read_json  # noqa: E402
from tfdaseg.utils.stages import Stages  # noqa: E402

_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (data and training).")
_STEPS = flags.DEFINE_integer("steps", 600, "Training steps of every run (the demo's 600).")
_SIZE = flags.DEFINE_string("size", "128x64", "WxH of the generated images and of training.")
_NUM_IMAGES = flags.DEFINE_list("num_images", ["1500", "1500", "200"],
                                "Source, target train and target val images per seed.")
_ROOT = flags.DEFINE_string("root", "bench_out/self_training", "Folder for data, runs, results.")

# Method name -> (flagfile, extra training flags).
METHODS = {
    "source_only": ("configs/demo/source_only.cfg", []),
    "adaptsegnet": ("configs/demo/adaptsegnet_multi.cfg", []),
    "dacs": ("configs/demo/dacs.cfg", []),
    "dacs_fd": ("configs/demo/dacs.cfg", ["--feature_distance_weight=0.005"]),
    "dacs_rcs_fd": ("configs/demo/dacs.cfg", ["--rare_class_sampling",
                                               "--feature_distance_weight=0.005"]),
    "dacs_mic": ("configs/demo/dacs.cfg", ["--mic", "--mic_block_size=8"]),
    "daformer_b0": ("configs/demo/daformer_b0.cfg", ["--rare_class_sampling",
                                                      "--feature_distance_weight=0.005"]),
}
# DAFormer's rcs min_pixels (configs/daformer/gta2cs_uda_warm_fdthings_rcs_croppl_a999_...py)
# over the pixels of a GTA5 label.
_RCS_MIN_PIXEL_SHARE = 3000 / (1914 * 1052)
_METHODS = flags.DEFINE_list("methods", list(METHODS), "Methods to run (keys of METHODS).")


def prepare_data(seed: int) -> dict[str, str]:
  """Generates and converts one seed's demo data (reused when complete); returns the patterns."""
  source, target, val = (int(n) for n in _NUM_IMAGES.value)
  paths = run_demo.Paths(data=os.path.join(_ROOT.value, f"seed{seed}", "data"),
                         out=os.path.join(_ROOT.value, f"seed{seed}"))
  scale = {"num_source": source, "num_target_train": target, "num_target_val": val,
           "size": _SIZE.value}
  stages = Stages(folder=os.path.join(paths.out, "stages"), fresh=False)
  os.makedirs(stages.folder, exist_ok=True)
  run_demo.make_data(stages, paths, scale, seed)
  return run_demo.convert(stages, paths)


def train_and_score(method: str, seed: int, patterns: dict[str, str]) -> float:
  """Trains `method` (resuming a finished run returns at once) and returns its target mIoU."""
  flagfile, extra = METHODS[method]
  width, height = _SIZE.value.split("x")
  run_dir = os.path.join(_ROOT.value, f"seed{seed}", "runs", method)
  flag_values = flags.FlagValues()
  train_config.define_flags(flag_values)
  flag_values(["train", f"--flagfile={os.path.join(_REPO, flagfile)}", f"--model_dir={run_dir}",
               f"--random_seed={seed}", f"--source_train={patterns['source_train']}",
               f"--target_train={patterns['target_train']}",
               f"--target_val={patterns['target_val']}", f"--eval_every={_STEPS.value}",
               f"--num_steps={_STEPS.value}", f"--num_steps_stop={_STEPS.value}",
               f"--save_pred_every={_STEPS.value}", f"--input_size={width},{height}",
               f"--input_size_target={width},{height}", "--image_summary_every=0",
               f"--rcs_min_pixels={round(_RCS_MIN_PIXEL_SHARE * int(width) * int(height))}",
               *extra])
  runner.run(train_config.TrainConfig.from_flags(flag_values))
  return float(read_json(os.path.join(run_dir, VALIDATION_LOG))["best"]["miou"]) * 100


def table(results: dict[str, list[float]], seeds: list[int]) -> str:
  """A markdown table: per-seed mIoU, mean and spread."""
  rows = ["| method | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | std |",
          "|---" * (len(seeds) + 3) + "|"]
  for method, values in results.items():
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    rows.append(f"| {method} | " + " | ".join(f"{v:.1f}" for v in values) +
                f" | {np.mean(values):.1f} | {std:.1f} |")
  return "\n".join(rows)


def chart(results: dict[str, list[float]], path: str) -> None:
  """Bars of the mean target mIoU with the per-seed values as dots."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  names = list(results)
  means = [np.mean(results[n]) for n in names]
  figure, axes = plt.subplots(figsize=(1.6 * len(names) + 1, 3.5))
  axes.bar(names, means, color="#8fb3d9")
  for index, name in enumerate(names):
    axes.plot([index] * len(results[name]), results[name], "k.")
  axes.set_ylabel("target val mIoU (%)")
  axes.set_title(f"demo, {_STEPS.value} steps at {_SIZE.value}, {len(results[names[0]])} seeds")
  figure.tight_layout()
  figure.savefig(path + ".tmp.png", dpi=120)
  plt.close(figure)
  os.replace(path + ".tmp.png", path)


def main(argv: list[str]) -> None:
  del argv
  unknown = sorted(set(_METHODS.value) - set(METHODS))
  if unknown:
    raise app.UsageError(f"--methods: unknown {unknown}; known: {', '.join(METHODS)}")
  start = time.time()
  seeds = [int(s) for s in _SEEDS.value]
  results = {method: [] for method in _METHODS.value}
  for seed in seeds:
    patterns = prepare_data(seed)
    for method in _METHODS.value:
      results[method].append(train_and_score(method, seed, patterns))
      print(f"seed {seed} {method}: target mIoU {results[method][-1]:.2f}", flush=True)
  text = table(results, seeds)
  summary = {"bench": "self_training", "seeds": seeds, "steps": _STEPS.value, "size": _SIZE.value,
             "num_images": [int(n) for n in _NUM_IMAGES.value],
             "elapsed_s": round(time.time() - start, 1),
             "methods": {m: {"miou": [round(v, 2) for v in values],
                             "mean": round(float(np.mean(values)), 2),
                             "std": round(float(np.std(values, ddof=1)), 2)
                             if len(values) > 1 else 0.0}
                         for m, values in results.items()}}
  atomic_write_json(os.path.join(_ROOT.value, "results.json"), summary)
  atomic_write_bytes(os.path.join(_ROOT.value, "table.md"), (text + "\n").encode())
  chart(results, os.path.join(_ROOT.value, "miou.png"))
  print(text)
  print(json.dumps(summary))


if __name__ == "__main__":
  app.run(main)
