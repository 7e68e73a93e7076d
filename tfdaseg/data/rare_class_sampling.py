"""DAFormer's rare class sampling (RCS): a source stream that shows rare classes more often.

DAFormer mmseg/datasets/uda_dataset.py (`get_rcs_class_probs`, `get_rare_class_sample`), with
its config (configs/daformer/gta2cs_uda_warm_fdthings_rcs_croppl_a999_daformer_mitb5_s0.py:
min_pixels 3000, class_temp 0.01, min_crop_ratio 0.5):
  * f_c = the share of class c among all labelled pixels of the split, over the classes that
    occur; P(c) = softmax((1 - f_c) / T);
  * per element: draw c ~ P, then uniformly one image with more than `min_pixels` pixels of c;
  * crop it; while the crop holds no more than `min_pixels * min_crop_ratio` pixels of c,
    draw another crop, up to 10 times; the last crop is kept either way.

Our choices (DAFormer's code does not fix them): the counts are mapped from the stored ids to
the run's class set (pixels of storage ids outside it are left out, as the ignore label); a
class that occurs but that no image holds more than `min_pixels` of is left out of P (DAFormer
asserts there is none) and named in the log. Draws are stateless from the stream's seed, so
the same seed gives the same stream and a resumed run (`tfdaseg.training.loop` restarts the
streams with a seed of the step) repeats it.

Records are read one by one at the byte offsets of `tfdaseg.data.class_stats`, so a split of
GTA5's 24,966 images is never read whole; only the statistics (about 100 bytes per image) are
in memory.
"""

import dataclasses

import numpy as np
import tensorflow as tf
from absl import logging

from tfdaseg.data import class_stats, integrity, labels, schema
from tfdaseg.utils.config_fields import field

# DAFormer uda_dataset.py:96: `for j in range(10)` re-crops after the first crop.
MAX_RECROPS = 10


@dataclasses.dataclass(frozen=True)
class RareClassSampling:
  """RCS settings, a section of the training config (DAFormer's config names in brackets).

  Args:
    enabled: Draw the source stream by RCS.
    temperature: T of P(c) = softmax((1 - f_c) / T) [class_temp].
    min_pixels: An image is drawn for class c if it holds more pixels of c [min_pixels].
    min_crop_ratio: A crop is kept once it holds more than min_pixels * min_crop_ratio pixels
      of c; 0 keeps the first crop [min_crop_ratio].
  """

  enabled: bool = field(False, "Draw the source stream by DAFormer's rare class sampling "
                        "(needs the split's class statistics, see tools/compute_class_stats.py).",
                        flag="rare_class_sampling")
  temperature: float = field(0.01, "Rare class sampling: T of P(c) = softmax((1 - f_c) / T) "
                             "(DAFormer 0.01).", above=0.0, flag="rcs_temperature")
  min_pixels: int = field(3000, "Rare class sampling: an image is drawn for class c if it holds "
                          "more pixels of c (DAFormer 3000).", minimum=0, flag="rcs_min_pixels")
  min_crop_ratio: float = field(0.5, "Rare class sampling: re-crop (up to 10 times) until the crop "
                                "holds more than rcs_min_pixels * this of c (DAFormer 0.5; 0: no "
                                "re-crop).", minimum=0.0, flag="rcs_min_crop_ratio")


def class_pixels(stats: dict, class_set: labels.ClassSet) -> np.ndarray:
  """Pixels of each class of `class_set` in each record: int64 [records, classes]."""
  table = class_set.storage_to_class_table()
  counts = np.zeros((len(stats["records"]), len(class_set.names)), np.int64)
  for row, (_, _, _, pixels) in enumerate(stats["records"]):
    for storage_id, n in pixels.items():
      class_id = int(table[int(storage_id)])
      if class_id != labels.IGNORE_ID:
        counts[row, class_id] += n
  return counts


def class_probabilities(counts: np.ndarray, temperature: float) -> np.ndarray:
  """P(c) = softmax((1 - f_c) / T) over the classes that occur; 0 for the others.

  Args:
    counts: [records, classes] pixel counts.
    temperature: T.

  Returns:
    float64 [classes].
  """
  totals = counts.sum(axis=0).astype(np.float64)
  present = totals > 0
  frequency = totals[present] / totals.sum()
  logits = (1.0 - frequency) / temperature
  weights = np.exp(logits - logits.max())
  probabilities = np.zeros(len(totals))
  probabilities[present] = weights / weights.sum()
  return probabilities


@dataclasses.dataclass(frozen=True)
class SamplingTable:
  """What the sampler draws from: P(c) and, per class, the records that may be drawn for it.

  Args:
    classes: The class ids that can be drawn.
    probabilities: P of each of `classes` (sums to 1).
    candidates: Per class of `classes`, the record indices holding more than min_pixels of it.
  """

  classes: np.ndarray
  probabilities: np.ndarray
  candidates: tuple[np.ndarray, ...]


def sampling_table(counts: np.ndarray, options: RareClassSampling,
                   source: str = "the split") -> SamplingTable:
  """P(c) over the classes with at least one image above `min_pixels`, and those images.

  Raises:
    ValueError: naming `source`, when no class has such an image.
  """
  probabilities = class_probabilities(counts, options.temperature)
  classes, kept, candidates = [], [], []
  dropped = []
  for c in np.nonzero(probabilities)[0]:
    rows = np.nonzero(counts[:, c] > options.min_pixels)[0]
    if rows.size:
      classes.append(c)
      kept.append(probabilities[c])
      candidates.append(rows)
    else:
      dropped.append(int(c))
  if not classes:
    raise ValueError(f"{source}: no image holds more than {options.min_pixels} pixels of any "
                     "class (lower --rcs_min_pixels)")
  if dropped:
    logging.warning("rare class sampling: classes %s occur in %s but no image holds more than "
                    "%d pixels of them; they are not drawn", dropped, source, options.min_pixels)
  kept = np.asarray(kept)
  return SamplingTable(np.asarray(classes, np.int64), kept / kept.sum(), tuple(candidates))


def _read_record(path: bytes, offset: np.int64, length: np.int64) -> bytes:
  return integrity.read_record(path.decode(), int(offset), int(length))


def make_rare_class_dataset(file_pattern: str, parser, *, batch_size: int, seed: int,
                            options: RareClassSampling,
                            input_context: tf.distribute.InputContext | None = None
                            ) -> tf.data.Dataset:
  """An endless training stream of batches drawn by rare class sampling.

  Args:
    file_pattern: The source split's shards (with its class statistics).
    parser: A `tfdaseg.data.pipeline.Parser` (resize, random crop, class-set remap).
    batch_size: Global batch size; per replica with `input_context`.
    seed: Seed of the draws (classes, images, crops).
    options: The RCS settings.
    input_context: From `strategy.distribute_datasets_from_function`: each input pipeline
      draws its own stream (its seed is derived from `seed` and its id).

  Returns:
    A dataset of {"image", "label", "filename"} batches, like `pipeline.make_dataset`'s.

  Raises:
    FileNotFoundError: when the statistics are missing (naming the file and the tool).
    ValueError: for statistics of another conversion, or no class to draw.
  """
  stats, paths = class_stats.read_class_stats(file_pattern)
  counts = class_pixels(stats, parser.class_set)
  table = sampling_table(counts, options, source=file_pattern)
  logging.info("rare class sampling over %d images: P(c) = %s", len(counts),
               {int(c): round(float(p), 4) for c, p in zip(table.classes, table.probabilities)})
  records = np.asarray([r[:3] for r in stats["records"]], np.int64)
  # Candidates of all classes in one flat array, class k's at [starts[k], starts[k] + sizes[k]).
  flat = tf.constant(np.concatenate(table.candidates), tf.int64)
  sizes = tf.constant([len(c) for c in table.candidates], tf.int64)
  starts = tf.constant(np.cumsum([0] + [len(c) for c in table.candidates[:-1]]), tf.int64)
  classes = tf.constant(table.classes, tf.int32)
  log_p = tf.constant(np.log(table.probabilities)[None, :], tf.float32)
  shard_paths = tf.constant(paths)
  shard, offset, length = (tf.constant(records[:, i]) for i in range(3))
  threshold = options.min_pixels * options.min_crop_ratio

  def draw(element_seed: tf.Tensor) -> dict[str, tf.Tensor]:
    seeds = tf.random.experimental.stateless_split(element_seed, 3 + MAX_RECROPS)
    k = tf.random.stateless_categorical(log_p, 1, seeds[0], dtype=tf.int32)[0, 0]
    pick = tf.random.stateless_uniform([], seeds[1], 0, sizes[k], dtype=tf.int64)
    row = flat[starts[k] + pick]
    serialized = tf.numpy_function(_read_record, [shard_paths[shard[row]], offset[row],
                                                  length[row]], tf.string, stateful=False)
    decoded = schema.decode_example(tf.ensure_shape(serialized, []))
    wanted = classes[k]

    def holds(example: dict) -> tf.Tensor:
      return tf.cast(tf.reduce_sum(tf.cast(tf.equal(example["label"], wanted), tf.int64)),
                     tf.float32) > threshold

    # Resized once; only the crop is drawn again.
    prepared = parser.prepare(decoded)
    first = parser.finish(prepared, seeds[2])
    if options.min_crop_ratio <= 0 or parser.augment is None:
      return first

    def again(j, example):
      return j + 1, parser.finish(prepared, seeds[3 + j])

    _, example = tf.while_loop(
        lambda j, example: tf.logical_and(j < MAX_RECROPS, tf.logical_not(holds(example))),
        again, (tf.constant(0), first))
    return example

  if input_context is not None:
    batch_size = input_context.get_per_replica_batch_size(batch_size)
    seed = int(np.random.SeedSequence([seed, input_context.input_pipeline_id]).generate_state(1)[0])
  seeds = tf.data.Dataset.random(seed=seed).batch(2, drop_remainder=True)
  dataset = seeds.map(draw, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
