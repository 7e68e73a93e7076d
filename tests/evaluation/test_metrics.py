"""The confusion matrix and IoU against an independent, pixel-by-pixel numpy implementation."""

import numpy as np
import tensorflow as tf

from tfdaseg.evaluation import metrics

N = 5


def _random_case(seed: int = 0, shape=(3, 17, 23)):
  rng = np.random.default_rng(seed)
  gt = rng.integers(0, N, shape)
  pred = rng.integers(0, N, shape)
  gt[rng.random(shape) < 0.2] = 255  # ignore
  gt[rng.random(shape) < 0.05] = N   # out of range: ignored too (0 <= gt < n)
  return gt, pred


def _loop_confusion(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
  matrix = np.zeros((N, N), np.int64)
  for g, p in zip(gt.ravel(), pred.ravel()):
    if 0 <= g < N:
      matrix[g, p] += 1
  return matrix


def _direct_iou(gt: np.ndarray, pred: np.ndarray) -> list[float]:
  """IoU per class from the masks themselves: |gt=c and pred=c| / |gt=c or pred=c| (valid px)."""
  valid = (gt >= 0) & (gt < N)
  ious = []
  for c in range(N):
    union = np.sum(((gt == c) | (pred == c)) & valid)
    ious.append(np.sum((gt == c) & (pred == c) & valid) / union if union else np.nan)
  return ious


def test_confusion_matrix_matches_a_pixel_loop():
  gt, pred = _random_case()
  np.testing.assert_array_equal(metrics.confusion_matrix(gt, pred, N).numpy(),
                                _loop_confusion(gt, pred))


def test_iou_matches_the_formula_on_masks():
  gt, pred = _random_case(seed=1)
  matrix = metrics.confusion_matrix(gt, pred, N).numpy()
  np.testing.assert_allclose(metrics.per_class_iou(matrix), _direct_iou(gt, pred))
  assert np.isclose(metrics.mean_iou(matrix), np.nanmean(_direct_iou(gt, pred)))


def test_class_absent_everywhere_is_excluded_from_the_mean():
  gt, pred = _random_case(seed=2)
  gt[gt == 3] = 255
  pred[pred == 3] = 0
  # Class 4 is predicted but never in the ground truth: it counts, with IoU 0.
  gt[gt == 4] = 1
  matrix = metrics.confusion_matrix(gt, pred, N).numpy()
  ious = metrics.per_class_iou(matrix)
  assert np.isnan(ious[3]) and ious[4] == 0.0
  expected = np.mean([v for i, v in enumerate(_direct_iou(gt, pred)) if i != 3])
  assert np.isclose(metrics.mean_iou(matrix), expected)
  summary = metrics.summarise(matrix, tuple("abcde"))
  assert summary["per_class_iou"]["d"] is None and np.isclose(summary["miou"], expected)


def test_summarise_reads_a_subset_off_the_full_matrix():
  gt, pred = _random_case(seed=3)
  matrix = metrics.confusion_matrix(gt, pred, N).numpy()
  summary = metrics.summarise(matrix, tuple("abcde"), subset=[0, 2, 4])
  ious = _direct_iou(gt, pred)
  assert list(summary["per_class_iou"]) == ["a", "c", "e"]
  assert np.isclose(summary["miou"], np.mean([ious[0], ious[2], ious[4]]))
  assert summary["num_pixels"] == int(((gt >= 0) & (gt < N)).sum())


def test_accumulator_sums_batches_inside_a_tf_function():
  gt, pred = _random_case(seed=4, shape=(6, 9, 11))
  accumulator = metrics.ConfusionMatrixAccumulator(N)
  dataset = tf.data.Dataset.from_tensor_slices((gt, pred)).batch(4)

  @tf.function
  def accumulate(ds):
    for labels, predictions in ds:
      accumulator.update(labels, predictions)

  accumulate(dataset)
  np.testing.assert_array_equal(accumulator.result(), _loop_confusion(gt, pred))
  accumulator.reset()
  assert accumulator.result().sum() == 0
