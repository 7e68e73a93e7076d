"""`make demo`: adapt a synthetic "game" street-scene domain to a "real-looking" one, end to end.

Every stage runs the public command a user would type (the converters, `tfdaseg.train`,
`tfdaseg.evaluate`, `tfdaseg.export`, `tfdaseg.predict`), so the demo exercises the real code
paths. A stage that finished with the same command and inputs is skipped on a re-run, without
starting its process (`tfdaseg.utils.stages`; `--fresh` redoes everything); each stage writes its outputs
atomically or under a completion stamp, so an interrupted run never leaves an artefact that a
later run trusts.

Usage:
  python tools/run_demo.py [--out=demo_out] [--data=demo_data] [--seed=0] [--fresh]
"""

import dataclasses
import json
import os
import shutil
import time

from absl import app, flags, logging

from tfdaseg.data import labels
from tfdaseg.utils.files import atomic_write_bytes, atomic_write_json, read_json
from tfdaseg.utils.stages import Stages

_OUT = flags.DEFINE_string("out", "demo_out", "Folder for runs, metrics, plots and the report.")
_DATA = flags.DEFINE_string("data", "demo_data", "Folder for the generated datasets and TFRecords.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for the data and for training.")
_FRESH = flags.DEFINE_bool("fresh", False, "Redo every stage instead of reusing finished ones.")
_SCALE = flags.DEFINE_enum(
    "scale", "full", ["full", "tiny"],
    "`full` is the demo; `tiny` is the same pipeline at toy size, for the test suite.")
_TRAIN_FLAGS = flags.DEFINE_list(
    "train_flags", [], "Extra flags for both trainings, after the config's, e.g. "
    "--train_flags=--mixed_precision=mixed_bfloat16 (a finished run is not trained again, so use a "
    "new --out).")

# Sizes of the two scales: the data generator's arguments and the training overrides.
_SCALES = {
    "full": {"num_source": 1500, "num_target_train": 1500, "num_target_val": 200,
             "size": "256x128", "train_overrides": []},
    "tiny": {"num_source": 8, "num_target_train": 8, "num_target_val": 4, "size": "64x32",
             "train_overrides": ["--num_steps=4", "--num_steps_stop=4", "--save_pred_every=2",
                                 "--input_size=64,32", "--input_size_target=64,32",
                                 "--summary_every=1", "--image_summary_every=2"]},
}
_RUNS = {"source_only": "configs/demo/source_only.cfg", "adapted": "configs/demo/adaptsegnet_multi.cfg"}
_CLASS_SET = "19"


@dataclasses.dataclass(frozen=True)
class Paths:
  """Where each stage reads and writes."""

  data: str
  out: str

  @property
  def raw(self) -> str:
    return os.path.join(self.data, "raw")

  @property
  def tfrecords(self) -> str:
    return os.path.join(self.data, "tfrecords")

  def run_dir(self, name: str) -> str:
    return os.path.join(self.out, "runs", name)

  def eval_dir(self, name: str) -> str:
    return os.path.join(self.out, "eval", name)


def make_data(stages: Stages, paths: Paths, scale: dict, seed: int) -> None:
  """Generates the two synthetic domains."""
  stages.run("data", ["tools/make_demo_data.py", f"--output_dir={paths.raw}", f"--seed={seed}",
                      f"--num_source={scale['num_source']}",
                      f"--num_target_train={scale['num_target_train']}",
                      f"--num_target_val={scale['num_target_val']}", f"--size={scale['size']}"],
             [paths.raw], fresh_flags=("--overwrite",))


def convert(stages: Stages, paths: Paths) -> dict[str, str]:
  """Converts the datasets with the real converters; returns the TFRecord pattern of each split.

  Each split gets a folder of its own, so each folder also holds valid TFDS metadata (TFDS
  features cannot describe labelled and unlabelled splits side by side).
  """
  jobs = {
      "source_train": ("gta5", os.path.join(paths.raw, "gta5"), "train", []),
      "target_train": ("cityscapes", os.path.join(paths.raw, "cityscapes"), "train", ["--unlabeled"]),
      "target_val": ("cityscapes", os.path.join(paths.raw, "cityscapes"), "val", []),
  }
  patterns = {}
  for key, (dataset, data_dir, split, extra) in jobs.items():
    output_dir = os.path.join(paths.tfrecords, key)
    stages.run(f"convert {key}", ["tools/convert_to_tfrecord.py", f"--dataset={dataset}",
                                  f"--data_dir={data_dir}", f"--split={split}",
                                  f"--output_dir={output_dir}", "--num_shards=2", *extra],
               [os.path.join(output_dir, f"{dataset}-{split}.json")], fresh_flags=("--overwrite",))
    patterns[key] = os.path.join(output_dir, f"{dataset}-{split}-*.tfrecord")
  return patterns


def train(stages: Stages, paths: Paths, patterns: dict[str, str], scale: dict, seed: int,
          extra_flags: list[str]) -> None:
  """Trains both runs; the trainer resumes from, or returns at once after, a finished run."""
  for name, flagfile in _RUNS.items():
    model_dir = paths.run_dir(name)
    if stages.fresh and os.path.isdir(model_dir):
      shutil.rmtree(model_dir)
    stages.run(f"train {name}", ["-m", "tfdaseg.train", f"--flagfile={flagfile}",
                                 f"--model_dir={model_dir}", f"--random_seed={seed}",
                                 f"--source_train={patterns['source_train']}",
                                 f"--target_train={patterns['target_train']}",
                                 *scale["train_overrides"], *extra_flags], [model_dir])


def evaluate(stages: Stages, paths: Paths, patterns: dict[str, str]) -> dict[str, dict]:
  """Scores both runs on the "real" val split; returns each run's metrics.json."""
  results = {}
  for name in _RUNS:
    out = paths.eval_dir(name)
    stages.run(f"evaluate {name}", ["-m", "tfdaseg.evaluate", f"--model_dir={paths.run_dir(name)}",
                                    f"--data={patterns['target_val']}", f"--class_set={_CLASS_SET}",
                                    f"--output_dir={out}"], [os.path.join(out, "metrics.json")])
    results[name] = read_json(os.path.join(out, "metrics.json"))
  return results


def export_and_predict(stages: Stages, paths: Paths, raw_val_dir: str) -> str:
  """Exports the adapted model as a SavedModel and predicts a few target images with it."""
  saved_model = os.path.join(paths.out, "saved_model")
  predictions = os.path.join(paths.out, "predictions")
  stages.run("export", ["-m", "tfdaseg.export", f"--model_dir={paths.run_dir('adapted')}",
                        f"--output={saved_model}", f"--class_set={_CLASS_SET}", "--overwrite"],
             [os.path.join(saved_model, "saved_model.pb")])
  stages.run("predict", ["-m", "tfdaseg.predict", f"--saved_model={saved_model}",
                         f"--input={raw_val_dir}", f"--output_dir={predictions}",
                         "--max_images=8"], [predictions])
  return saved_model


def plot_results(paths: Paths, patterns: dict[str, str], results: dict[str, dict],
                 num_images: int = 6) -> None:
  """Per-class IoU bars, a grid of target predictions of both runs, and training curves."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (only this stage needs TF)

  from tfdaseg.data.pipeline import make_dataset
  from tfdaseg.data.preprocessing import caffe_unpreprocess
  from tfdaseg.evaluation import events, inference, loading, plots

  class_set = labels.get_class_set(_CLASS_SET)
  present = [name for name in class_set.names
             if any(m["per_class_iou"].get(name) is not None for m in results.values())]
  plots.plot_per_class_iou({name: metrics["per_class_iou"] for name, metrics in results.items()},
                           present, os.path.join(paths.out, "per_class_iou.png"),
                           title="target (real) val: per-class IoU")
  batch = next(iter(make_dataset(patterns["target_val"], class_set=_CLASS_SET, image_size=None,
                                 label_size=None, batch_size=num_images, training=False)))
  rows = {"ground truth": list(batch["label"].numpy())}
  for name in _RUNS:
    model = loading.load_model("model_dir", paths.run_dir(name))
    probabilities = inference.predict_probabilities(
        model.forward, batch["image"], inference.InferenceOptions(input_size=model.input_size))
    rows[name.replace("_", " ")] = list(tf.argmax(probabilities, axis=-1).numpy())
  plots.save_prediction_grid(list(caffe_unpreprocess(batch["image"]).numpy()), rows,
                             class_set.palette,
                             os.path.join(paths.out, "predictions_grid.png"))
  plots.plot_curves({name: events.read_scalars(paths.run_dir(name)) for name in _RUNS},
                    os.path.join(paths.out, "training_curves.png"), smoothing=0.6)


def write_report(paths: Paths, results: dict[str, dict], elapsed_s: float) -> dict:
  """Writes report.json and report.md, and returns the report."""
  class_set = labels.get_class_set(_CLASS_SET)
  report = {
      name: {"target_miou": metrics["miou"], "per_class_iou": metrics["per_class_iou"]}
      for name, metrics in results.items()
  }
  report["gain_miou"] = report["adapted"]["target_miou"] - report["source_only"]["target_miou"]
  report["elapsed_s"] = round(elapsed_s, 1)
  atomic_write_json(os.path.join(paths.out, "report.json"), report)
  rows = ["| class | source-only IoU | adapted IoU |", "|---|---|---|"]
  for class_name in class_set.names:
    before = report["source_only"]["per_class_iou"].get(class_name)
    after = report["adapted"]["per_class_iou"].get(class_name)
    if before is None and after is None:
      continue
    rows.append(f"| {class_name} | {_percent(before)} | {_percent(after)} |")
  text = "\n".join([
      "# tfdaseg demo: synthetic game -> real-looking street scenes", "",
      f"- source-only target mIoU: **{_percent(report['source_only']['target_miou'])}**",
      f"- AdaptSegNet (multi-level) target mIoU: **{_percent(report['adapted']['target_miou'])}**",
      f"- gain: **{report['gain_miou'] * 100:+.1f}** points", "", *rows, "",
      "Plots: `per_class_iou.png`, `predictions_grid.png`, `training_curves.png`; "
      "SavedModel: `saved_model/`.", ""])
  atomic_write_bytes(os.path.join(paths.out, "report.md"), text.encode())
  return report


def _percent(value: float | None) -> str:
  return "n/a" if value is None else f"{value * 100:.1f}"


def main(argv: list[str]) -> None:
  del argv
  start = time.time()
  scale = _SCALES[_SCALE.value]
  paths = Paths(data=_DATA.value, out=_OUT.value)
  os.makedirs(paths.out, exist_ok=True)
  stages = Stages(folder=os.path.join(paths.out, "stages"), fresh=_FRESH.value)
  os.makedirs(stages.folder, exist_ok=True)
  make_data(stages, paths, scale, _SEED.value)
  patterns = convert(stages, paths)
  train(stages, paths, patterns, scale, _SEED.value, _TRAIN_FLAGS.value)
  results = evaluate(stages, paths, patterns)
  export_and_predict(stages, paths, os.path.join(paths.raw, "cityscapes", "leftImg8bit", "val"))
  plot_results(paths, patterns, results)
  report = write_report(paths, results, time.time() - start)
  print(json.dumps({k: report[k] for k in ("gain_miou", "elapsed_s")}))
  print(f"source-only target mIoU {_percent(report['source_only']['target_miou'])}, "
        f"adapted {_percent(report['adapted']['target_miou'])}, "
        f"gain {report['gain_miou'] * 100:+.1f} points; report: {paths.out}/report.md")


if __name__ == "__main__":
  app.run(main)
