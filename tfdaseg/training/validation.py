"""Periodic evaluation during training (mIoU on a labelled target split), to pick the best snapshot.

Uses the evaluation package's inference path and confusion-matrix metric, so the numbers are
the ones `tfdaseg.evaluate` reports for the same images at the same input size.
"""

import os
from typing import Callable

import keras
import tensorflow as tf

from tfdaseg.data.labels import ClassSet
from tfdaseg.evaluation import inference, metrics
from tfdaseg.models.output_conventions import output_conventions
from tfdaseg.utils.files import atomic_write_json, read_json

VALIDATION_LOG = "validation.json"


class Validator:
  """Scores a generator on a dataset that yields {"image", "label"} batches (labels full size).

  Args:
    dataset_fn: Returns the evaluation dataset (one pass, in order).
    class_set: The classes the labels hold.
    model_class_set: The classes the generator predicts (a superset, or the same names).
  """

  def __init__(self, dataset_fn: Callable[[], tf.data.Dataset], class_set: ClassSet,
               model_class_set: ClassSet):
    self.dataset_fn = dataset_fn
    self.class_set = class_set
    self.channels = inference.output_channels(class_set, model_class_set)

  def __call__(self, generator: keras.Model) -> dict:
    """Returns `metrics.summarise` of the generator's predictions over the dataset."""
    num_classes = self.class_set.num_classes
    options = inference.InferenceOptions(
        align_corners=output_conventions(generator).align_corners)

    # Validation images may differ in size: relax shapes instead of tracing per size.
    @tf.function(reduce_retracing=True)
    def batch_matrix(images, labels):
      probabilities = inference.predict_probabilities(
          inference.keras_forward(generator), images, options,
          output_size=tf.shape(labels)[1:3], channels=self.channels)
      predictions = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
      return metrics.confusion_matrix(labels, predictions, num_classes)

    matrix = tf.zeros([num_classes, num_classes], tf.int64)
    for batch in self.dataset_fn():
      matrix += batch_matrix(batch["image"], batch["label"])
    return metrics.summarise(matrix.numpy(), self.class_set.names)


def record(model_dir: str, step: int, summary: dict) -> dict:
  """Appends a step's scores to `model_dir/validation.json` (atomically) and returns the log.

  The log holds {"history": [{"step", "miou", "per_class_iou"}, ...], "best": the row with
  the highest mIoU}.
  """
  path = os.path.join(model_dir, VALIDATION_LOG)
  log = read_json(path) if tf.io.gfile.exists(path) else {"history": []}
  history = [row for row in log["history"] if row["step"] != step]
  history.append({"step": step, "miou": summary["miou"],
                  "per_class_iou": summary["per_class_iou"]})
  history.sort(key=lambda row: row["step"])
  scored = [row for row in history if row["miou"] is not None]
  log = {"history": history, "best": max(scored, key=lambda row: row["miou"]) if scored else None}
  atomic_write_json(path, log)
  return log
