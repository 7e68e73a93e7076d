"""The tf.data input pipeline: converted TFRecord shards -> batches for training and evaluation.

Reading is split like TF Model Garden's segmentation input: `schema.decode_example` decodes a
record (bytes -> uint8 image and storage-id label); `Parser` turns that into a model input
(resize, optional augmentation, Caffe preprocessing, storage -> class-set remap). Around it,
`make_dataset` lists and shards files, interleaves reads, shuffles, batches and prefetches.

Batches are {"image": float32 [B, H, W, 3] BGR minus mean, "label": int32 [B, H, W] class ids
(255 ignore), "filename": string [B]}.
"""

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import tensorflow as tf

from tfdaseg.data import augment as augment_lib
from tfdaseg.data import labels
from tfdaseg.data import preprocessing
from tfdaseg.data import schema
from tfdaseg.data import shards
from tfdaseg.utils.files import read_json

DEFAULT_SHUFFLE_BUFFER = 64
# Shards read at once while training; more spreads I/O, fewer keeps memory small.
DEFAULT_CYCLE_LENGTH = 8
SAME = "same"


def _resize_bilinear(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
  return tf.image.resize(image, size, method="bilinear")


def _resize_bicubic_like_pil(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
  # PIL's BICUBIC (the reference loaders' filter) widens the kernel when shrinking
  # (antialiasing) and rounds and clips to uint8.
  resized = tf.image.resize(image, size, method="bicubic", antialias=True)
  return tf.clip_by_value(tf.round(resized), 0.0, 255.0)


def _resize_nearest(label: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
  return tf.image.resize(label, size, method="nearest")


def _resize_unless_sized(image: tf.Tensor, size: tuple[int, int],
                         resize: Callable[[tf.Tensor, tuple[int, int]], tf.Tensor],
                         dtype: tf.DType) -> tf.Tensor:
  """Returns `resize(image, size)`, or `image` (cast to `dtype`) when it already has that size.

  Shards converted with --resize to the input size are thus read without any resampling.
  """
  sized = tf.reduce_all(tf.equal(tf.shape(image)[:2], size))
  resized = tf.cond(sized, lambda: tf.cast(image, dtype), lambda: resize(image, size))
  return tf.ensure_shape(resized, [size[0], size[1], image.shape[-1]])


# Image interpolation by name (`interpolation=` of make_dataset); labels always use nearest.
INTERPOLATIONS: dict[str, Callable[[tf.Tensor, tuple[int, int]], tf.Tensor]] = {
    "bilinear": _resize_bilinear,
    "bicubic": _resize_bicubic_like_pil,
}


def match_files(file_pattern: str | Sequence[str]) -> list[str]:
  """Returns the sorted files matching a glob pattern (or any of several).

  Raises:
    FileNotFoundError: naming the pattern when nothing matches.
  """
  patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
  files = sorted({f for pattern in patterns for f in tf.io.gfile.glob(pattern)})
  if not files:
    raise FileNotFoundError(f"no TFRecord files match {file_pattern!r}")
  return files


def _manifest_paths(files: Sequence[str]) -> list[str]:
  return sorted({shards.manifest_path_for_shard(f) for f in files})


def read_manifest(file_pattern: str | Sequence[str]) -> dict:
  """Returns the manifest of the split whose shards `file_pattern` matches.

  Raises:
    FileNotFoundError: when nothing matches or the manifest is missing.
    ValueError: when the pattern spans several splits.
  """
  paths = _manifest_paths(match_files(file_pattern))
  if len(paths) > 1:
    raise ValueError(f"{file_pattern!r} matches shards of several splits ({', '.join(paths)}); "
                     "read each split's manifest separately")
  return read_json(paths[0])


def _check_class_space(files: Sequence[str], class_set: labels.ClassSet) -> None:
  for path in _manifest_paths(files):
    space = read_json(path)["class_space"]
    if space != class_set.storage:
      raise ValueError(f"{path}: the shards hold {space} labels, but class set "
                       f"{class_set.name!r} reads {class_set.storage}")


def _hw(size: tuple[int, int] | None) -> tuple[int, int] | None:
  """(width, height), like the reference's input_size flags -> (height, width) for TF."""
  return None if size is None else (int(size[1]), int(size[0]))


@dataclasses.dataclass(frozen=True)
class Parser:
  """Turns a decoded record into a model input.

  Args:
    class_set: The classes to produce; its storage space must be the records'.
    image_size: (width, height) to resize images to, or None to keep their size.
    label_size: "same" (the image's output size), None (keep the stored size, for
      evaluation at full resolution) or (width, height).
    interpolation: Image resize filter, a key of INTERPOLATIONS.
    augment: Random scale / crop / flip, or None.
  """

  class_set: labels.ClassSet
  image_size: tuple[int, int] | None = None
  label_size: tuple[int, int] | str | None = SAME
  interpolation: str = "bilinear"
  augment: augment_lib.AugmentConfig | None = None

  def __post_init__(self):
    if self.interpolation not in INTERPOLATIONS:
      raise ValueError(f"unknown interpolation {self.interpolation!r}; known: "
                       f"{', '.join(INTERPOLATIONS)}")
    if self.augment is not None and self.label_size != SAME:
      raise ValueError("augmentation moves pixels, so it needs label_size='same'")
    if self.augment is not None and self.image_size is None and self.augment.crop_size is None:
      raise ValueError("augmentation needs a fixed output size: give image_size or a crop_size")

  def __call__(self, decoded: Mapping[str, tf.Tensor],
               seed: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
    """Parses one `schema.decode_example` output; `seed` (int [2]) drives augmentation."""
    image, label = decoded["image"], decoded["label"]
    size = _hw(self.image_size)
    if size is not None:
      image = _resize_unless_sized(image, size, INTERPOLATIONS[self.interpolation], tf.float32)
    label_size = size if self.label_size == SAME else _hw(self.label_size)
    if label_size is not None:
      label = _resize_unless_sized(label, label_size, _resize_nearest, tf.uint8)
    image = preprocessing.caffe_preprocess(image)
    if self.augment is not None:
      image, label = augment_lib.augment(image, label, seed, self.augment)
    table = tf.constant(self.class_set.storage_to_class_table(), tf.int32)
    return {
        "image": image,
        "label": tf.gather(table, tf.cast(label[..., 0], tf.int32)),
        "filename": decoded["filename"],
    }


def make_dataset(
    file_pattern: str | Sequence[str],
    *,
    class_set: labels.ClassSet | str,
    image_size: tuple[int, int] | None = None,
    label_size: tuple[int, int] | str | None = SAME,
    batch_size: int,
    training: bool,
    seed: int | None = None,
    augment: augment_lib.AugmentConfig | Mapping[str, Any] | None = None,
    input_context: tf.distribute.InputContext | None = None,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    interpolation: str = "bilinear",
    cycle_length: int = DEFAULT_CYCLE_LENGTH,
) -> tf.data.Dataset:
  """Builds the input pipeline over converted shards.

  Args:
    file_pattern: Glob of shards, e.g. "/data/gta5-train-*.tfrecord" (or a list of globs).
    class_set: A ClassSet or its name ("19", "16", "13", "11", ...).
    image_size: (width, height) to resize images to (like the reference's input_size), or
      None to keep their stored size.
    label_size: "same" resizes labels (nearest) to image_size; None keeps their stored size
      (evaluation at full resolution); or an explicit (width, height).
    batch_size: Global batch size; per replica with `input_context`.
    training: Repeat forever, shuffle files and records, drop the last partial batch. Else
      one pass, in file order.
    seed: Makes shuffling and augmentation reproducible (and the order deterministic).
    augment: AugmentConfig (or a dict of its fields) or None (the reference's default).
    input_context: From `strategy.distribute_datasets_from_function`: reads only this input
      pipeline's share of the files, with the per-replica batch size.
    shuffle_buffer: Records in the shuffle buffer while training.
    interpolation: Image resize filter: "bilinear", or "bicubic" (like the reference's PIL).
    cycle_length: Shards read in parallel while training.

  Returns:
    A dataset of {"image", "label", "filename"} batches.

  Raises:
    FileNotFoundError: when no file matches or a manifest is missing.
    ValueError: when the shards' storage space is not the class set's, or there are fewer
      files than input pipelines.
  """
  if isinstance(class_set, str):
    class_set = labels.get_class_set(class_set)
  parser = Parser(class_set, image_size, label_size, interpolation,
                  augment_lib.AugmentConfig.from_value(augment))
  files = match_files(file_pattern)
  _check_class_space(files, class_set)
  deterministic = seed is not None or not training

  dataset = tf.data.Dataset.from_tensor_slices(files)
  if input_context is not None:
    if input_context.num_input_pipelines > len(files):
      raise ValueError(f"{file_pattern!r}: {len(files)} files cannot be split over "
                       f"{input_context.num_input_pipelines} input pipelines; convert with "
                       "more shards")
    dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    batch_size = input_context.get_per_replica_batch_size(batch_size)
  if training:
    dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()
    dataset = dataset.interleave(
        tf.data.TFRecordDataset, cycle_length=min(cycle_length, len(files)), block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  else:
    dataset = dataset.flat_map(tf.data.TFRecordDataset)

  def parse(serialized: tf.Tensor, example_seed: tf.Tensor | None = None) -> dict:
    return parser(schema.decode_example(serialized), example_seed)

  if parser.augment is not None:
    # One stateless seed per example, from a seeded stream: same seed, same augmentation.
    seeds = tf.data.Dataset.random(seed=seed).batch(2, drop_remainder=True)
    dataset = tf.data.Dataset.zip((dataset, seeds))
  dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
  dataset = dataset.batch(batch_size, drop_remainder=training)

  options = tf.data.Options()
  options.deterministic = deterministic
  # With an input context the files are already split; otherwise let tf.distribute split them.
  options.experimental_distribute.auto_shard_policy = (
      tf.data.experimental.AutoShardPolicy.OFF if input_context is not None
      else tf.data.experimental.AutoShardPolicy.FILE)
  return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def make_adaptation_dataset(source_ds: tf.data.Dataset,
                            target_ds: tf.data.Dataset) -> tf.data.Dataset:
  """Zips a source and a target stream into {"source": batch, "target": batch}.

  Each stream repeats on its own, so the shorter one does not end the epoch; make_dataset's
  training datasets already repeat forever.
  """
  return tf.data.Dataset.zip({"source": source_ds.repeat(), "target": target_ds.repeat()})

