"""Scores a generator on a labelled split with the reference protocol (metrics.py).

The whole per-batch computation (resize, forward, test-time augmentation, upsampling to the
label's size, argmax, confusion-matrix update) runs in one `tf.function` that consumes several
batches of the dataset per call; Python only advances the progress bar between calls.
"""

import dataclasses
import time

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from tfdaseg.data import labels
from tfdaseg.evaluation import metrics
from tfdaseg.evaluation.inference import InferenceOptions, output_channels, predict_probabilities
from tfdaseg.evaluation.loading import LoadedModel


@dataclasses.dataclass(frozen=True)
class ScoringPlan:
  """How a model's output is scored on a class set.

  Args:
    class_set: The classes reported ("13", say).
    matrix_set: The classes of the confusion matrix and of the labels read: `class_set`, or
      the set it is scored from ("16" for "13": the reference reads the 13-class mIoU off the
      16-class IoUs).
    channels: The model's logit channels giving `matrix_set`, None when they coincide.
    subset: Positions of `class_set` in `matrix_set`, None when they coincide.
  """

  class_set: labels.ClassSet
  matrix_set: labels.ClassSet
  channels: list[int] | None
  subset: list[int] | None


def plan_scoring(class_set: labels.ClassSet, model_class_set: labels.ClassSet) -> ScoringPlan:
  """Works out the `ScoringPlan` of `class_set` for a model predicting `model_class_set`.

  Raises:
    ValueError: when the model does not predict every class needed.
  """
  if class_set.scored_from:
    matrix_set = labels.get_class_set(class_set.scored_from)
    subset = labels.subset_indices(class_set, matrix_set)
  else:
    matrix_set, subset = class_set, None
  try:
    channels = output_channels(matrix_set, model_class_set)
  except ValueError as e:
    raise ValueError(f"cannot score class set {class_set.name} with a model of class set "
                     f"{model_class_set.name}: {e}") from None
  return ScoringPlan(class_set, matrix_set, channels, subset)


@dataclasses.dataclass
class EvaluationResult:
  """The outcome of one evaluation.

  Args:
    matrix: int64 [n, n] confusion matrix over `plan.matrix_set`.
    plan: The scoring plan.
    metrics: `metrics.summarise` of the matrix for `plan.class_set`.
    num_images: Images scored.
    seconds: Wall time of the pass.
  """

  matrix: np.ndarray
  plan: ScoringPlan
  metrics: dict
  num_images: int
  seconds: float

  @property
  def images_per_second(self) -> float:
    return self.num_images / self.seconds if self.seconds > 0 else float("nan")


class Evaluator:
  """Accumulates the confusion matrix of a model over datasets of {"image", "label"} batches.

  Batches hold "image" (caffe-preprocessed float32 [B, H, W, 3] at any size) and "label"
  (int32 [B, h, w] in `plan.matrix_set` ids, 255 ignore) at the size scored: the prediction is
  upsampled to the label's size, as the reference scores at 2048x1024.

  Args:
    model: The generator. Restoring other weights into it (`LoadedModel.restore`) reuses the
      traced function.
    plan: What to score (`plan_scoring`).
    options: Input size, scales, flip and resize method.
    batches_per_call: Batches consumed per `tf.function` call (progress granularity).
  """

  def __init__(self, model: LoadedModel, plan: ScoringPlan, options: InferenceOptions,
               batches_per_call: int = 8):
    self.model = model
    self.plan = plan
    self.options = options
    self.batches_per_call = batches_per_call
    self._accumulator = metrics.ConfusionMatrixAccumulator(plan.matrix_set.num_classes)
    self._run = tf.function(self._consume)

  def _consume(self, iterator, max_batches: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    batches = tf.constant(0)
    images = tf.constant(0)
    for _ in tf.range(max_batches):
      element = iterator.get_next_as_optional()
      if not element.has_value():
        break
      batch = element.get_value()
      label = batch["label"]
      probabilities = predict_probabilities(self.model.forward, batch["image"], self.options,
                                            output_size=tf.shape(label)[1:3],
                                            channels=self.plan.channels)
      self._accumulator.update(label, tf.argmax(probabilities, axis=-1, output_type=tf.int32))
      batches += 1
      images += tf.shape(label)[0]
    return batches, images

  def evaluate(self, dataset: tf.data.Dataset, total: int | None = None,
               progress: bool = True) -> EvaluationResult:
    """Scores one pass over `dataset`.

    Args:
      dataset: Batches as described in the class docstring, one pass.
      total: Number of images, for the progress bar.
      progress: Show a progress bar (images, images/s).

    Returns:
      The `EvaluationResult`.
    """
    self._accumulator.reset()
    iterator = iter(dataset)
    max_batches = tf.constant(self.batches_per_call)
    count = 0
    start = time.perf_counter()
    with tqdm(total=total, unit="img", desc=f"evaluating {self.model.description}",
              disable=not progress, dynamic_ncols=True) as bar:
      while True:
        batches, images = (int(v) for v in self._run(iterator, max_batches))
        count += images
        bar.update(images)
        if batches < self.batches_per_call:
          break
    seconds = time.perf_counter() - start
    matrix = self._accumulator.result()
    summary = metrics.summarise(matrix, self.plan.matrix_set.names, self.plan.subset)
    return EvaluationResult(matrix, self.plan, summary, count, seconds)
