"""What an evaluation leaves on disk and prints: metrics.json, the confusion matrix, figures,
a per-class table, and the mIoU-per-checkpoint table of a run."""

import csv
import io
import os

import numpy as np

from tfdaseg.evaluation import plots
from tfdaseg.evaluation.evaluator import EvaluationResult
from tfdaseg.utils.files import atomic_write_bytes, atomic_write_json

METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion_matrix.npy"
CONFUSION_PLOT = "confusion_matrix.png"
IOU_PLOT = "per_class_iou.png"
CHECKPOINTS_CSV = "checkpoints.csv"
CHECKPOINTS_JSON = "checkpoints.json"
CHECKPOINTS_PLOT = "miou_vs_step.png"


def format_table(result: EvaluationResult) -> str:
  """The per-class IoU table (percent), mIoU last, as the reference prints it."""
  ious = result.metrics["per_class_iou"]
  width = max(len(name) for name in ious) + 2
  lines = [f"{'class':<{width}}IoU (%)"]
  lines += [f"{name:<{width}}{'-' if iou is None else f'{100 * iou:.2f}'}"
            for name, iou in ious.items()]
  miou = result.metrics["miou"]
  lines.append(f"{'mIoU':<{width}}{'-' if miou is None else f'{100 * miou:.2f}'}"
               f"  ({result.plan.class_set.num_classes} classes, {result.num_images} images, "
               f"{result.images_per_second:.2f} images/s)")
  return "\n".join(lines)


def metrics_record(result: EvaluationResult, **context) -> dict:
  """The JSON record of one evaluation: metrics, class sets, counts, speed and `context`."""
  record = dict(result.metrics)
  record.update(
      class_set=result.plan.class_set.name,
      matrix_class_set=result.plan.matrix_set.name,
      matrix_classes=list(result.plan.matrix_set.names),
      num_images=result.num_images,
      images_per_second=round(result.images_per_second, 3),
      **context,
  )
  return record


def write_result(result: EvaluationResult, output_dir: str, **context) -> dict:
  """Writes metrics.json, confusion_matrix.npy and the two figures into `output_dir`.

  Args:
    result: The evaluation.
    output_dir: The folder (created).
    **context: Extra JSON fields (model, data, options).

  Returns:
    The metrics record written.
  """
  os.makedirs(output_dir, exist_ok=True)
  record = metrics_record(result, **context)
  atomic_write_json(os.path.join(output_dir, METRICS_FILE), record)
  buffer = io.BytesIO()
  np.save(buffer, result.matrix)
  atomic_write_bytes(os.path.join(output_dir, CONFUSION_FILE), buffer.getvalue())
  plots.plot_confusion(result.matrix, result.plan.matrix_set.names,
                       os.path.join(output_dir, CONFUSION_PLOT),
                       title=f"{context.get('model', '')}".strip())
  plots.plot_per_class_iou({context.get("name", "model"): result.metrics["per_class_iou"]},
                           result.plan.class_set.names, os.path.join(output_dir, IOU_PLOT),
                           title=f"class set {result.plan.class_set.name}")
  return record


def checkpoint_row(step: int, result: EvaluationResult) -> dict:
  """One row of the checkpoint table: step, mIoU, pixel accuracy, then per-class IoU."""
  return {"step": step, "miou": result.metrics["miou"],
          "pixel_accuracy": result.metrics["pixel_accuracy"],
          **result.metrics["per_class_iou"]}


def write_checkpoint_table(rows: list[dict], output_dir: str) -> dict:
  """Writes checkpoints.csv / .json (best and last step) and miou_vs_step.png; returns the best row.

  Args:
    rows: `checkpoint_row`s, by step.
    output_dir: The folder (created).

  Returns:
    The row with the highest mIoU (the last one where none was scored).

  Raises:
    ValueError: when there are no rows.
  """
  if not rows:
    raise ValueError(f"{output_dir}: no checkpoints were evaluated")
  os.makedirs(output_dir, exist_ok=True)
  scored = [row for row in rows if row["miou"] is not None]
  best = max(scored, key=lambda row: row["miou"]) if scored else rows[-1]
  atomic_write_json(os.path.join(output_dir, CHECKPOINTS_JSON),
                    {"best_step": best["step"], "best_miou": best["miou"],
                     "last_step": rows[-1]["step"], "last_miou": rows[-1]["miou"], "rows": rows})
  text = io.StringIO()
  writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
  writer.writeheader()
  writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
  atomic_write_bytes(os.path.join(output_dir, CHECKPOINTS_CSV), text.getvalue().encode())
  plots.plot_metric_vs_step(
      [row["step"] for row in rows],
      [np.nan if row["miou"] is None else 100.0 * row["miou"] for row in rows],
      os.path.join(output_dir, CHECKPOINTS_PLOT), name="mIoU (%)")
  return best
