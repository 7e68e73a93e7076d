"""Segmentation metrics with the reference protocol (AdaptSegNet compute_iou.py, ADVENT).

A confusion matrix is accumulated over the valid pixels (0 <= gt < n) of a split, in graph
mode; per-class IoU = diag / (row + col - diag) and mIoU = nanmean, so a class absent from both
the ground truth and the predictions is excluded from the mean.
"""

import numpy as np
import tensorflow as tf


def confusion_matrix(labels: tf.Tensor, predictions: tf.Tensor, num_classes: int) -> tf.Tensor:
  """Counts (ground truth, prediction) pairs over the valid pixels.

  Args:
    labels: Integer tensor of ground-truth class ids, any shape; ids outside [0, n) are ignored.
    predictions: Integer tensor of predicted class ids in [0, n), the shape of `labels`.
    num_classes: n.

  Returns:
    int64 [n, n]: entry (i, j) counts pixels of class i predicted as j.
  """
  labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
  predictions = tf.reshape(tf.cast(predictions, tf.int64), [-1])
  # compute_iou.py fast_hist: k = (a >= 0) & (a < n); bincount(n * a[k] + b[k], minlength=n**2).
  valid = (labels >= 0) & (labels < num_classes)
  index = num_classes * tf.boolean_mask(labels, valid) + tf.boolean_mask(predictions, valid)
  counts = tf.math.bincount(index, minlength=num_classes * num_classes,
                            maxlength=num_classes * num_classes, dtype=tf.int64)
  return tf.reshape(counts, [num_classes, num_classes])


class ConfusionMatrixAccumulator(tf.Module):
  """A confusion matrix summed on device across `update` calls (inside or outside tf.function).

  Args:
    num_classes: Number of classes n.
  """

  def __init__(self, num_classes: int):
    super().__init__(name="confusion_matrix")
    self.num_classes = num_classes
    self.matrix = tf.Variable(tf.zeros([num_classes, num_classes], tf.int64), trainable=False)

  def update(self, labels: tf.Tensor, predictions: tf.Tensor) -> None:
    """Adds the pixels of a batch (see `confusion_matrix`)."""
    self.matrix.assign_add(confusion_matrix(labels, predictions, self.num_classes))

  def reset(self) -> None:
    """Zeroes the matrix."""
    self.matrix.assign(tf.zeros_like(self.matrix))

  def result(self) -> np.ndarray:
    """Returns the matrix as an int64 numpy array."""
    return self.matrix.numpy()


def per_class_iou(matrix: np.ndarray) -> np.ndarray:
  """IoU of every class, NaN where a class is absent from ground truth and predictions.

  Args:
    matrix: [n, n] confusion matrix (rows ground truth, columns predictions).

  Returns:
    float64 [n]: diag / (row sum + column sum - diag).
  """
  matrix = np.asarray(matrix, dtype=np.float64)
  intersection = np.diag(matrix)
  union = matrix.sum(axis=1) + matrix.sum(axis=0) - intersection
  with np.errstate(divide="ignore", invalid="ignore"):
    return intersection / union


def mean_iou(matrix: np.ndarray) -> float:
  """The nanmean of `per_class_iou` (NaN when no class is present at all)."""
  ious = per_class_iou(matrix)
  return float(np.nanmean(ious)) if np.isfinite(ious).any() else float("nan")


def pixel_accuracy(matrix: np.ndarray) -> float:
  """Fraction of valid pixels predicted correctly."""
  matrix = np.asarray(matrix, dtype=np.float64)
  total = matrix.sum()
  return float(np.trace(matrix) / total) if total else float("nan")


def summarise(matrix: np.ndarray, class_names: tuple[str, ...],
              subset: list[int] | None = None) -> dict:
  """The metrics of one evaluation, JSON-ready.

  Args:
    matrix: [n, n] confusion matrix.
    class_names: The names of the n classes.
    subset: Positions of the classes to score, when the score is read off a larger class set
      (the 13 SYNTHIA classes off a 16-class matrix); all classes when None.

  Returns:
    A dict with "miou", "pixel_accuracy", "per_class_iou" ({name: IoU or None}) and
    "num_pixels" (valid pixels counted).
  """
  ious = per_class_iou(matrix)
  positions = list(range(len(class_names))) if subset is None else list(subset)
  selected = ious[positions]
  miou = float(np.nanmean(selected)) if np.isfinite(selected).any() else float("nan")
  return {
      "miou": _json_float(miou),
      "pixel_accuracy": _json_float(pixel_accuracy(matrix)),
      "per_class_iou": {class_names[i]: _json_float(ious[i]) for i in positions},
      "num_pixels": int(np.asarray(matrix).sum()),
  }


def _json_float(value: float) -> float | None:
  """NaN becomes None (JSON null): the class did not occur."""
  return None if np.isnan(value) else float(value)
