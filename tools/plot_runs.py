"""Compares training runs: curves from their TensorBoard events, per-class IoU from metrics.json.

  python tools/plot_runs.py --runs=runs/source_only,runs/adaptsegnet --labels=source,adapted \
      --output=figures [--smoothing=0.6] [--metrics=a/metrics.json,b/metrics.json]

Writes curves.png (every scalar: losses, learning rates, mIoU), miou.png (the mIoU tags alone,
when any run logs one) and per_class_iou.png (runs with a metrics.json), and prints a summary.
"""

import os

from absl import app, flags, logging

from tfdaseg.evaluation import cli_flags  # noqa: F401  (defines --output)
from tfdaseg.evaluation import events, plots, reports
from tfdaseg.utils.files import read_json

flags.DEFINE_list("runs", None, "Run folders (training model_dirs) to compare.")
flags.DEFINE_list("labels", None, "A legend label per run; default: the folder names.")
flags.DEFINE_list("metrics", None, "A metrics.json per run; default: <run>/metrics.json, "
                  "else <run>/eval/metrics.json.")
flags.DEFINE_float("smoothing", 0.0, "TensorBoard-style smoothing of the curves, in [0, 1).")

FLAGS = flags.FLAGS

CURVES_PLOT = "curves.png"
MIOU_PLOT = "miou.png"
IOU_PLOT = "per_class_iou.png"


def find_metrics(run_dir: str) -> str | None:
  """The metrics.json of a run: at its root, else in eval/ (tfdaseg-evaluate's default)."""
  for path in (os.path.join(run_dir, reports.METRICS_FILE),
               os.path.join(run_dir, "eval", reports.METRICS_FILE)):
    if os.path.exists(path):
      return path
  return None


def main(argv: list[str]) -> None:
  """Draws the comparison figures into --output."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.runs or not FLAGS.output:
    raise app.UsageError("--runs and --output are required")
  names = FLAGS.labels or [os.path.basename(run.rstrip("/")) for run in FLAGS.runs]
  if len(names) != len(FLAGS.runs):
    raise app.UsageError(f"{len(FLAGS.runs)} runs but {len(names)} labels")
  if FLAGS.metrics and len(FLAGS.metrics) != len(FLAGS.runs):
    raise app.UsageError(f"{len(FLAGS.runs)} runs but {len(FLAGS.metrics)} metrics files")
  os.makedirs(FLAGS.output, exist_ok=True)

  curves = {name: events.read_scalars(run) for name, run in zip(names, FLAGS.runs)}
  plots.plot_curves(curves, os.path.join(FLAGS.output, CURVES_PLOT), smoothing=FLAGS.smoothing)
  miou_tags = sorted({tag for run in curves.values() for tag in run if "miou" in tag.lower()})
  if miou_tags:
    plots.plot_curves(curves, os.path.join(FLAGS.output, MIOU_PLOT), tags=miou_tags)

  per_class, class_names = {}, None
  for index, (name, run) in enumerate(zip(names, FLAGS.runs)):
    path = FLAGS.metrics[index] if FLAGS.metrics else find_metrics(run)
    if path is None:
      logging.warning("%s: no metrics.json; left out of %s", run, IOU_PLOT)
      continue
    ious = read_json(path)["per_class_iou"]
    if class_names is not None and list(ious) != class_names:
      raise app.UsageError(f"{path}: scores other classes than the runs before it")
    class_names = list(ious)
    per_class[name] = ious
  if per_class:
    plots.plot_per_class_iou(per_class, class_names, os.path.join(FLAGS.output, IOU_PLOT))

  for name, run in curves.items():
    best = max((max(values) for tag, (_, values) in run.items() if tag in miou_tags),
               default=None)
    last = max((steps[-1] for steps, _ in run.values() if steps), default=0)
    print(f"{name}: {len(run)} scalar tags up to step {last}"
          + (f", best logged mIoU {100 * best:.2f}" if best is not None else ""))
  print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
  app.run(main)
