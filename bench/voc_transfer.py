"""Seed papers 000 and 001 at demo size, in one run: transfer to a transformed domain, and TS3.

Part 1, the setting of Benbihi et al. (arXiv 1805.04141): the demo's labelled street scenes
(tools/make_demo_data.py, the Cityscapes-layout "real" domain) are the source, their
content-aligned copy by tools/make_transformed_dataset.py the target. Per seed: a source-only
model trained on the source, exported as model.keras; from it, feature regression (no target
labels) and fine-tuning on the labelled target copy; all scored on the transformed val split
(source-only also on the original val, its score before the shift).

Part 2, TS3 (Xiao et al., arXiv 1711.06828): generated object scenes in the VOC layout
(tools/make_object_scenes.py, converted by the VOC converter with image-level labels); the
fully supervised model vs TS3 at 50% and 0% strong categories, with TS3's percentage of the
supervised mIoU.

Every stage is a public command. Writes `results.json`, `results.md` (both tables: mean and
spread over seeds, wall time) and `per_class_iou.png` / `ts3_per_class_iou.png` (the charts,
first seed) under --root, and prints one JSON line.

Usage:
  python bench/voc_transfer.py [--seeds=0,1,2] [--num_train=1500] [--num_val=200] \
      [--size=128x64] [--source_steps=600] [--transfer_steps=300] [--scene_train=1000] \
      [--scene_val=200] [--scene_size=96x96] [--ts3_steps=600] [--root=bench_out/voc_transfer]
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)

from tfdaseg.data import labels, transforms  # noqa: E402
from tfdaseg.evaluation import plots  # noqa: E402
from tfdaseg.utils.files import atomic_write_bytes, atomic_write_json, read_json  # noqa: E402

_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Training seeds (the data is the same).")
_ROOT = flags.DEFINE_string("root", "bench_out/voc_transfer", "Folder for data, runs, results.")
_NUM_TRAIN = flags.DEFINE_integer("num_train", 1500, "Labelled source scenes (and their copies).")
_NUM_VAL = flags.DEFINE_integer("num_val", 200, "Validation scenes (and their copies).")
_SIZE = flags.DEFINE_string("size", "128x64", "Scene size WIDTHxHEIGHT (also the training size).")
_SOURCE_STEPS = flags.DEFINE_integer("source_steps", 600, "Steps of the source-only teacher.")
_TRANSFER_STEPS = flags.DEFINE_integer("transfer_steps", 300, "Steps of feature regression and "
                                       "of fine-tuning, from the teacher.")
_TRANSFORMS = flags.DEFINE_string("transforms", "style=0.6,hue_rotation=120,gamma=1.6,noise=6",
                                  "The target domain's chain (tools/make_transformed_dataset.py).")
_TRANSFER_LR = flags.DEFINE_float("transfer_learning_rate", 2.5e-3, "Base rate of both transfers.")
_SCENE_TRAIN = flags.DEFINE_integer("scene_train", 1000, "Object scenes for TS3's training.")
_SCENE_VAL = flags.DEFINE_integer("scene_val", 200, "Object scenes for TS3's validation.")
_SCENE_SIZE = flags.DEFINE_string("scene_size", "96x96", "Object scene size WIDTHxHEIGHT.")
_TS3_STEPS = flags.DEFINE_integer("ts3_steps", 600, "Steps of supervised and of each TS3 run.")
_TRAIN_FLAGS = flags.DEFINE_list("train_flags", [], "Extra flags for every training.")

# The demo's model and schedule (configs/demo/source_only.cfg) over each experiment's config.
_DEMO_MODEL = ["--blocks=1,1,1,1", "--base_width=16", "--bn_mode=train", "--aspp_compat=full",
               "--batch_size=8", "--summary_every=50", "--image_summary_every=0",
               "--eval_every=0"]
_STREET_CLASSES = ["--class_set=19", "--target_class_set=19"]
_CONFIGS = {**{name: os.path.join(_REPO, "configs", "voc_transformed", f"{name}.cfg")
               for name in ("source_only", "feature_regression", "finetune")},
            **{name: os.path.join(_REPO, "configs", "voc", f"{name}.cfg")
               for name in ("supervised", "ts3_strong50", "ts3_strong0")}}
# Table rows: (name, run, evaluation data key).
_ROWS = (("source-only on source (no shift)", "source_only", "val"),
         ("source-only on target", "source_only", "copy_val"),
         ("feature regression (no target labels)", "feature_regression", "copy_val"),
         ("fine-tune (target labels)", "finetune", "copy_val"))
_TS3_ROWS = (("supervised (all categories pixel-labelled)", "supervised"),
             ("TS3, 50% strong", "ts3_strong50"), ("TS3, 0% strong", "ts3_strong0"))
# The object scenes draw VOC ids 1..6 only. ts3_strong50.cfg's --strong_fraction=0.5 counts the
# 20 VOC classes (ids 1-10 strong), which would leave every scene class strong and TS3 fully
# supervised (its strong_images metric read 1.0): half of the scene classes are named instead.
SCENE_CLASSES = 6
_TS3_FLAGS = {"ts3_strong50": [
    "--strong_classes=" + ",".join(str(c) for c in range(1, SCENE_CLASSES // 2 + 1))]}


def _run(stage: str, argv: list[str]) -> float:
  """Runs one public command from the repository root; returns its wall time."""
  print(f"[{stage}] {' '.join(argv)}", flush=True)
  start = time.time()
  env = {"TF_CPP_MIN_LOG_LEVEL": "1", "PYTHONPATH": _REPO, **os.environ}
  result = subprocess.run([sys.executable, *argv], cwd=_REPO, env=env, check=False,
                          capture_output=True, text=True)
  if result.returncode != 0:
    raise SystemExit(f"voc_transfer: stage {stage!r} failed:\n{result.stderr[-3000:]}")
  return time.time() - start


def _written(manifest: str, count: int, transforms: str | None = None) -> bool:
  """Whether `manifest` exists and describes `count` images (and the chain, for copies)."""
  if not os.path.exists(manifest):
    return False
  written = read_json(manifest)
  chain = written["options"].get("transforms")
  return written["count"] == count and (transforms is None or chain == transforms)


def make_data(root: str) -> dict[str, str]:
  """Scenes, their conversion and their transformed copies (each redone when its manifest
  describes other settings); returns the TFRecord patterns."""
  raw, records = os.path.join(root, "raw"), os.path.join(root, "tfrecords")
  _run("data", ["tools/make_demo_data.py", f"--output_dir={raw}", "--seed=0", "--num_source=1",
                f"--num_target_train={_NUM_TRAIN.value}", f"--num_target_val={_NUM_VAL.value}",
                f"--size={_SIZE.value}"])
  chain = transforms.chain_text(transforms.parse_chain(_TRANSFORMS.value))
  patterns = {}
  for split, count in (("train", _NUM_TRAIN.value), ("val", _NUM_VAL.value)):
    out = os.path.join(records, split)
    if not _written(os.path.join(out, f"cityscapes-{split}.json"), count):
      _run(f"convert {split}", ["tools/convert_to_tfrecord.py", "--dataset=cityscapes",
                                f"--data_dir={os.path.join(raw, 'cityscapes')}",
                                f"--split={split}", f"--output_dir={out}", "--num_shards=2",
                                "--overwrite"])
    patterns[split] = os.path.join(out, f"cityscapes-{split}-*.tfrecord")
    copy = os.path.join(records, f"copy_{split}")
    if not _written(os.path.join(copy, f"cityscapes_transformed-{split}.json"), count, chain):
      _run(f"transform {split}", ["tools/make_transformed_dataset.py",
                                  f"--input={patterns[split]}", f"--output_dir={copy}",
                                  f"--transforms={_TRANSFORMS.value}", "--seed=0",
                                  "--overwrite"])
    patterns[f"copy_{split}"] = os.path.join(copy, f"cityscapes_transformed-{split}-*.tfrecord")
  return patterns


def _train(name: str, model_dir: str, seed: int, steps: int, *flags_: str) -> float:
  return _run(f"train {name}", ["-m", "tfdaseg.train", f"--flagfile={_CONFIGS[name]}",
                                f"--model_dir={model_dir}", f"--random_seed={seed}",
                                f"--num_steps={steps}", f"--num_steps_stop={steps}",
                                f"--save_pred_every={steps}", *_DEMO_MODEL, *flags_,
                                *_TRAIN_FLAGS.value])


def run_seed(seed: int, root: str, patterns: dict[str, str]) -> dict:
  """Trains the three runs of one seed and scores the table's rows; returns mIoUs and times."""
  runs = os.path.join(root, f"seed{seed}")
  size = _SIZE.value.replace("x", ",")
  sizes = [f"--input_size={size}", f"--input_size_target={size}",
           f"--target_val={patterns['copy_val']}", *_STREET_CLASSES]
  export = os.path.join(runs, "source_only_export")
  times = {"source_only": _train("source_only", os.path.join(runs, "source_only"), seed,
                                 _SOURCE_STEPS.value, f"--source_train={patterns['train']}",
                                 "--learning_rate=2.5e-3", *sizes)}
  _run("export", ["-m", "tfdaseg.export", f"--model_dir={os.path.join(runs, 'source_only')}",
                  "--format=keras", f"--output={export}", "--overwrite"])
  transfer = [f"--restore_from={os.path.join(export, 'model.keras')}",
              f"--learning_rate={_TRANSFER_LR.value}", *sizes]
  times["feature_regression"] = _train(
      "feature_regression", os.path.join(runs, "feature_regression"), seed,
      _TRANSFER_STEPS.value, f"--source_train={patterns['train']}",
      f"--target_train={patterns['copy_train']}", *transfer)
  times["finetune"] = _train("finetune", os.path.join(runs, "finetune"), seed,
                             _TRANSFER_STEPS.value, f"--target_train={patterns['copy_train']}",
                             *transfer)
  scores = {}
  for row, run, data in _ROWS:
    out = os.path.join(runs, "eval", f"{run}-{data}")
    _run(f"evaluate {row}", ["-m", "tfdaseg.evaluate", f"--model_dir={os.path.join(runs, run)}",
                             f"--data={patterns[data]}", "--class_set=19", f"--output_dir={out}"])
    scores[row] = read_json(os.path.join(out, "metrics.json"))
  return {"scores": scores, "train_s": times}


def make_scenes(root: str) -> dict[str, str]:
  """Object scenes in the VOC layout, converted; returns the train and val patterns."""
  # One folder per scene setting, so a re-run with other sizes never reuses these scenes.
  setting = f"scenes_{_SCENE_TRAIN.value}_{_SCENE_VAL.value}_{_SCENE_SIZE.value}"
  raw, records = os.path.join(root, setting, "raw"), os.path.join(root, setting, "tfrecords")
  if not os.path.exists(os.path.join(raw, "ImageSets", "Segmentation", "val.txt")):
    _run("scenes", ["tools/make_object_scenes.py", f"--output_dir={raw}",
                    f"--num_train={_SCENE_TRAIN.value}", f"--num_val={_SCENE_VAL.value}",
                    f"--size={_SCENE_SIZE.value}", f"--num_classes={SCENE_CLASSES}"])
  patterns = {}
  for split in ("train", "val"):
    if not os.path.exists(os.path.join(records, f"voc-{split}.json")):
      _run(f"convert scenes {split}", ["tools/convert_to_tfrecord.py", "--dataset=voc",
                                       f"--data_dir={raw}", f"--split={split}",
                                       f"--output_dir={records}", "--num_shards=2"])
    patterns[split] = os.path.join(records, f"voc-{split}-*.tfrecord")
  return patterns


def run_ts3_seed(seed: int, root: str, patterns: dict[str, str]) -> dict:
  """Trains supervised and TS3 at 50% / 0% strong for one seed; scores them on val."""
  runs = os.path.join(root, f"seed{seed}")
  size = _SCENE_SIZE.value.replace("x", ",")
  common = [f"--source_train={patterns['train']}", f"--target_val={patterns['val']}",
            f"--input_size={size}", f"--input_size_target={size}", "--class_set=21",
            "--target_class_set=21", "--learning_rate=2.5e-3",
            f"--coarse_warmup_steps={_TS3_STEPS.value // 4}"]
  scores, times = {}, {}
  for row, run in _TS3_ROWS:
    flags_ = [f for f in common if run != "supervised" or not f.startswith("--coarse")]
    flags_ += _TS3_FLAGS.get(run, [])
    times[run] = _train(run, os.path.join(runs, run), seed, _TS3_STEPS.value, *flags_)
    out = os.path.join(runs, "eval", run)
    _run(f"evaluate {row}", ["-m", "tfdaseg.evaluate", f"--model_dir={os.path.join(runs, run)}",
                             f"--data={patterns['val']}", "--class_set=21", f"--output_dir={out}"])
    scores[row] = read_json(os.path.join(out, "metrics.json"))
  return {"scores": scores, "train_s": times}


def _ts3_table(results: dict[int, dict]) -> list[str]:
  seeds = sorted(results)
  supervised = np.array([results[s]["scores"][_TS3_ROWS[0][0]]["miou"] for s in seeds])
  lines = ["| setting | mIoU (mean) | spread (min-max) | % of supervised (mean) |",
           "|---|---|---|---|"]
  for row, _ in _TS3_ROWS:
    values = np.array([results[s]["scores"][row]["miou"] for s in seeds])
    lines.append(f"| {row} | {values.mean() * 100:.1f} | {values.min() * 100:.1f}-"
                 f"{values.max() * 100:.1f} | {np.mean(values / supervised) * 100:.1f} |")
  return lines


def _table(results: dict[int, dict], wall_s: float) -> str:
  seeds = sorted(results)
  lines = ["| setting | mIoU (mean) | spread (min-max) | per seed |", "|---|---|---|---|"]
  for row, _, _ in _ROWS:
    values = np.array([results[s]["scores"][row]["miou"] * 100 for s in seeds])
    lines.append(f"| {row} | {values.mean():.1f} | {values.min():.1f}-{values.max():.1f} | "
                 f"{', '.join(f'{v:.1f}' for v in values)} |")
  settings = (f"seeds {','.join(map(str, seeds))}; {_NUM_TRAIN.value} train / {_NUM_VAL.value} "
              f"val scenes at {_SIZE.value}; teacher {_SOURCE_STEPS.value} steps, transfers "
              f"{_TRANSFER_STEPS.value} steps; target = {_TRANSFORMS.value}")
  ts3_settings = (f"{_SCENE_TRAIN.value} train / {_SCENE_VAL.value} val object scenes at "
                  f"{_SCENE_SIZE.value}; {_TS3_STEPS.value} steps each (paper, full VOC with "
                  "DeepLab: 96.5% at 50% strong, 89.4% at 0%)")
  ts3 = {seed: results[seed]["ts3"] for seed in seeds}
  return "\n".join(["# Seed papers 000 and 001 at demo size (bench/voc_transfer.py)", "",
                    "## Transfer to a transformed domain", "", settings, "", *lines, "",
                    "## TS3: strong -> weak categories", "", ts3_settings, "",
                    *_ts3_table(ts3), "", f"Wall time: {wall_s / 60:.1f} min.", ""])


def main(argv: list[str]) -> None:
  del argv
  start = time.time()
  root = os.path.join(_REPO, _ROOT.value) if not os.path.isabs(_ROOT.value) else _ROOT.value
  patterns = make_data(root)
  scenes = make_scenes(root)
  results = {}
  for seed in map(int, _SEEDS.value):
    results[seed] = run_seed(seed, root, patterns)
    results[seed]["ts3"] = run_ts3_seed(seed, root, scenes)
  wall_s = time.time() - start
  first = results[min(results)]["scores"]
  class_set = labels.get_class_set("19")
  present = [c for c in class_set.names
             if any(m["per_class_iou"].get(c) is not None for m in first.values())]
  plots.plot_per_class_iou({row: first[row]["per_class_iou"] for row, _, _ in _ROWS}, present,
                           os.path.join(root, "per_class_iou.png"),
                           title="transfer to the transformed domain: per-class IoU")
  ts3_first = results[min(results)]["ts3"]["scores"]
  scene_classes = [c for c in labels.get_class_set("21").names
                   if any(m["per_class_iou"].get(c) is not None for m in ts3_first.values())]
  plots.plot_per_class_iou({row: ts3_first[row]["per_class_iou"] for row, _ in _TS3_ROWS},
                           scene_classes, os.path.join(root, "ts3_per_class_iou.png"),
                           title="TS3 vs supervised on object scenes: per-class IoU")
  atomic_write_json(os.path.join(root, "results.json"), {"results": results,
                                                         "wall_s": round(wall_s, 1)})
  table = _table(results, wall_s)
  atomic_write_bytes(os.path.join(root, "results.md"), table.encode())
  print(table)
  print(json.dumps({"bench": "voc_transfer", "wall_s": round(wall_s, 1), **{
      row: [round(results[s]["scores"][row]["miou"] * 100, 2) for s in sorted(results)]
      for row, _, _ in _ROWS}, **{
      row: [round(results[s]["ts3"]["scores"][row]["miou"] * 100, 2) for s in sorted(results)]
      for row, _ in _TS3_ROWS}}))


if __name__ == "__main__":
  app.run(main)
