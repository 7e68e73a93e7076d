"""The training loop: one custom loop for every distribution strategy.

`strategy.run(model.train_step, ...)` inside a `tf.function`, on a distributed dataset; the
chief writes checkpoints (every `save_pred_every` steps, all networks, optimisers and the step)
and TensorBoard summaries, the other workers write their checkpoints to a temporary folder that
is deleted. A re-run of the same command resumes from the last checkpoint.

The input stream restarts at every checkpoint with a seed derived from the step, so a resumed
run reads exactly the batches an uninterrupted one reads (and, with op determinism, ends with
the same weights): tf.data iterators of distributed datasets cannot be checkpointed.
"""

import dataclasses
import math
import shutil
import sys
import tempfile
import time
from typing import Callable, Mapping

import keras
import tensorflow as tf
from absl import logging

from tfdaseg.models import outputs as keys
from tfdaseg.models.output_conventions import output_conventions, upsample_bilinear
from tfdaseg.training import summaries, validation
from tfdaseg.training.model import DomainAdaptationModel
from tfdaseg.training.strategies import is_chief
from tfdaseg.utils.config_fields import field

# (input context, seed) -> dataset of {stream: batch} with the per-replica batch size.
DatasetFn = Callable[[tf.distribute.InputContext, int], tf.data.Dataset]
CHECKPOINT_NAME = "ckpt"


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  """What the loop does besides stepping.

  Args:
    num_steps_stop: Train until this many steps are done (reference 150000).
    save_pred_every: Checkpoint period in steps (reference 5000); also at num_steps_stop.
    iter_size: Sub-batches per step (gradient accumulation).
    keep_checkpoints: How many checkpoints to keep (0: all).
    summary_every: Scalar summary period in steps (0: never).
    image_summary_every: Prediction-grid period in steps (0: never).
    eval_every: Validation period in steps (0: never; needs a validator).
    random_seed: Base seed of the input streams, the weights and the in-step draws.
  """

  num_steps_stop: int = field(150000, "Stop after this many steps (reference 150000; ADVENT "
                              "120000).", minimum=1)
  save_pred_every: int = field(5000, "Checkpoint period in steps (reference 5000).", minimum=1)
  iter_size: int = field(1, "Sub-batches accumulated per step (reference 1).", minimum=1)
  keep_checkpoints: int = field(5, "Checkpoints kept; 0 keeps all (ADVENT's protocol scores every "
                                "snapshot: TEST.MODE 'best').", minimum=0)
  summary_every: int = field(10, "TensorBoard scalar period in steps (0: never).", minimum=0)
  image_summary_every: int = field(1000, "TensorBoard prediction-grid period (0: never).",
                                   minimum=0)
  eval_every: int = field(0, "Validation period on --target_val (0: never).", minimum=0)
  random_seed: int = field(1234, "Seed of weights, data order and in-step random draws "
                           "(reference 1234).")


@dataclasses.dataclass(frozen=True)
class Preview:
  """Fixed images whose predictions are drawn into TensorBoard.

  Args:
    batch: Stream name -> batch ("image" Caffe-preprocessed, "label").
    palette: One RGB colour per class of the generator.
  """

  batch: Mapping[str, Mapping[str, tf.Tensor]]
  palette: tuple


@dataclasses.dataclass(frozen=True)
class TrainResult:
  """The outcome of `train`.

  Args:
    start_step: The step the run started (or resumed) from.
    step: The step reached.
    seconds: Wall time of the steps.
    logs: The last step's logs.
  """

  start_step: int
  step: int
  seconds: float
  logs: dict

  @property
  def seconds_per_step(self) -> float:
    return self.seconds / max(self.step - self.start_step, 1)


class NonFiniteLossError(FloatingPointError):
  """A loss became NaN or infinite; training stopped before writing a checkpoint."""


def _check_finite(step: int, logs: Mapping[str, float], latest: str | None) -> None:
  bad = {k: v for k, v in logs.items() if k.startswith("loss/") and not math.isfinite(v)}
  if bad:
    where = f"the last good checkpoint is {latest}" if latest else "no checkpoint was written yet"
    raise NonFiniteLossError(f"step {step}: non-finite loss {bad}; training stopped ({where}). "
                             f"Lower the learning rates or check the data.")


class _Periodic:
  """Whether a period of `every` steps ends at a step (0 = never)."""

  def __init__(self, every: int, stop: int):
    self.every, self.stop = every, stop

  def __call__(self, step: int) -> bool:
    return self.every > 0 and (step % self.every == 0 or step == self.stop)


def distributed_step(model: DomainAdaptationModel, strategy: tf.distribute.Strategy,
                     iter_size: int) -> Callable:
  """A `tf.function` that runs one global step on every replica and returns the mean logs.

  Args:
    model: The training model (built in `strategy.scope()`).
    strategy: The distribution strategy.
    iter_size: Sub-batches drawn from the iterator per step.

  Returns:
    step_fn(distributed iterator) -> {log name: scalar averaged over replicas}.
  """
  @tf.function
  def step_fn(iterator):
    batches = tuple(next(iterator) for _ in range(iter_size))
    names = []

    def replica_step(batches):
      logs = model.train_step(batches)
      names[:] = sorted(logs)
      # One stacked vector, so that the replicas' logs are reduced in a single exchange.
      return tf.stack([logs[k] for k in names])

    values = strategy.reduce(tf.distribute.ReduceOp.MEAN,
                             strategy.run(replica_step, args=(batches,)), axis=None)
    return dict(zip(names, tf.unstack(values)))
  return step_fn


def _write_preview(writer: tf.summary.SummaryWriter, model: DomainAdaptationModel,
                   preview: Preview, step: int) -> None:
  rows = []
  for batch in preview.batch.values():
    labels = batch["label"]
    logits = model.generator(batch["image"], training=False)[keys.LOGITS]
    predictions = tf.argmax(upsample_bilinear(
        logits, tf.shape(labels)[1:3], output_conventions(model.generator).align_corners),
        axis=-1, output_type=tf.int32)
    for i in range(int(tf.shape(labels)[0])):
      rows.append({"image": batch["image"][i], "label": labels[i], "prediction": predictions[i]})
  panel = tuple(int(d) for d in tf.shape(rows[-1]["label"])[:2])
  summaries.write_image(writer, step, "predictions",
                        summaries.prediction_grid(rows, preview.palette, panel),
                        description="rows: " + ", ".join(preview.batch)
                        + "; columns: image, label, prediction")


def train(model: DomainAdaptationModel, strategy: tf.distribute.Strategy, dataset_fn: DatasetFn,
          model_dir: str, config: LoopConfig, *, validator: validation.Validator | None = None,
          preview: Preview | None = None, images_per_step: int = 1) -> TrainResult:
  """Trains `model` to `config.num_steps_stop` steps, resuming from `model_dir` if possible.

  Args:
    model: Built inside `strategy.scope()`, optimisers built.
    strategy: The distribution strategy.
    dataset_fn: Builds the input for one worker (see `DatasetFn`).
    model_dir: Where checkpoints and summaries go (the chief's), and resume reads from.
    config: Periods, seed, stop step.
    validator: Scores the generator every `config.eval_every` steps (chief only).
    preview: Images drawn with predictions every `config.image_summary_every` steps.
    images_per_step: Images one global step reads (for images/s).

  Returns:
    The `TrainResult`.

  Raises:
    NonFiniteLossError: when a loss becomes NaN or infinite (no checkpoint is written for it).
  """
  chief = is_chief(strategy)
  write_dir = model_dir if chief else tempfile.mkdtemp(prefix="tfdaseg-worker-")
  try:
    checkpoint = tf.train.Checkpoint(**model.trackables())
    manager = tf.train.CheckpointManager(checkpoint, write_dir, config.keep_checkpoints or None,
                                         checkpoint_name=CHECKPOINT_NAME)
    latest = tf.train.latest_checkpoint(model_dir)
    if latest:
      checkpoint.restore(latest).assert_existing_objects_matched()
      logging.info("resumed from %s", latest)
    start = int(model.step_counter.numpy())
    if start >= config.num_steps_stop:
      logging.info("%s is already trained to step %d (num_steps_stop %d): nothing to do",
                   model_dir, start, config.num_steps_stop)
      return TrainResult(start, start, 0.0, {})
    return _train_from(start, model=model, strategy=strategy, dataset_fn=dataset_fn,
                       model_dir=model_dir, config=config, validator=validator, preview=preview,
                       chief=chief, manager=manager, latest=latest,
                       images_per_step=images_per_step)
  finally:
    if not chief:
      shutil.rmtree(write_dir, ignore_errors=True)


def _train_from(start: int, *, model: DomainAdaptationModel, strategy: tf.distribute.Strategy,
                dataset_fn: DatasetFn, model_dir: str, config: LoopConfig,
                validator: validation.Validator | None, preview: Preview | None, chief: bool,
                manager: tf.train.CheckpointManager, latest: str | None,
                images_per_step: int) -> TrainResult:
  """The steps from `start` to `config.num_steps_stop`, checkpointing each segment."""
  stop = config.num_steps_stop
  writer = summaries.create_writer(model_dir, chief)
  step_fn = distributed_step(model, strategy, config.iter_size)
  summary_due = _Periodic(config.summary_every, stop)
  image_due = _Periodic(config.image_summary_every if preview and chief else 0, stop)
  eval_due = _Periodic(config.eval_every if validator and chief else 0, stop)
  # In a log file (no terminal) a bar line every 30 s instead of one per step.
  progbar = keras.utils.Progbar(stop - start, verbose=1 if chief else 0, unit_name="step",
                                interval=0.05 if sys.stdout.isatty() else 30.0)
  step, logs = start, {}
  started = window_start = time.time()
  window_steps = 0
  logging.info("training steps %d..%d (%d images per step)", start, stop,
               images_per_step)
  while step < stop:
    segment_end = min((step // config.save_pred_every + 1) * config.save_pred_every, stop)
    seed = config.random_seed + step
    iterator = iter(strategy.distribute_datasets_from_function(
        lambda context, seed=seed: dataset_fn(context, seed)))
    while step < segment_end:
      # The rates the coming step uses (the schedules read the optimisers' step counters).
      rates = ({k: float(v) for k, v in model.learning_rates().items()}
               if summary_due(step + 1) else {})
      logs = {k: float(v) for k, v in step_fn(iterator).items()}
      step += 1
      window_steps += 1
      _check_finite(step, logs, latest)
      if summary_due(step):
        now = time.time()
        scalars = {**logs, **rates}
        scalars["perf/images_per_s"] = images_per_step * window_steps / (now - window_start)
        summaries.write_scalars(writer, step, scalars)
        window_start, window_steps = now, 0
      if image_due(step):
        _write_preview(writer, model, preview, step)
      if eval_due(step):
        result = validator(model.generator)
        scores = {"eval/miou": result["miou"], **{
            f"eval/iou/{name}": iou for name, iou in result["per_class_iou"].items()}}
        summaries.write_scalars(writer, step, {k: v for k, v in scores.items() if v is not None})
        best = validation.record(model_dir, step, result)["best"]
        logging.info("step %d: validation mIoU %s (best %s at step %s)", step, result["miou"],
                     best and best["miou"], best and best["step"])
      progbar.update(step - start, [(k[len("loss/"):], v) for k, v in logs.items()
                                    if k.startswith("loss/")])
    latest = manager.save(checkpoint_number=step)
    writer.flush()
  seconds = time.time() - started
  message = (f"trained steps {start}..{step} in {seconds:.1f} s: "
             f"{seconds / (step - start):.3f} s/step, "
             f"{images_per_step * (step - start) / seconds:.2f} images/s")
  logging.info(message)
  if chief:
    print(message, flush=True)
  return TrainResult(start, step, seconds, logs)
