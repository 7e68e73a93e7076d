"""The tf.data input pipeline: converted TFRecord shards -> batches for training and evaluation.

Reading is split like TF Model Garden's segmentation input: `schema.decode_example` decodes a
record (bytes -> uint8 image and storage-id label); `Parser` turns that into a model input
(resize, PIL-like bicubic by default; optional augmentation; Caffe preprocessing; storage ->
class-set remap). Around it, `make_dataset` lists and shards files, checks each shard's record
count while reading it, interleaves reads, shuffles, batches and prefetches.

Batches are {"image": float32 [B, H, W, 3] BGR minus mean, "label": int32 [B, H, W] class ids
(255 ignore), "filename": string [B]}, plus "pseudo_valid": float32 [B, H, W] with pseudo-label
margins (`AugmentConfig.pseudo_margins`) and one entry per `ExampleFeature` of the parser (e.g.
`tfdaseg.data.superpixels.SlicSuperpixels`).
"""

import dataclasses
from typing import Any, Mapping, Protocol, Sequence

import numpy as np
import tensorflow as tf

from tfdaseg.data import augment as augment_lib
from tfdaseg.data import integrity
from tfdaseg.data import labels
from tfdaseg.data import preprocessing
from tfdaseg.data import schema
from tfdaseg.data import shards
from tfdaseg.data.resizing import DEFAULT_INTERPOLATION, INTERPOLATIONS, Resize, resize_label
from tfdaseg.utils.files import read_json

# Memory the training shuffle buffer may hold, per stream and input pipeline. It holds
# serialized records (before decoding): about 450 GTA5 or Cityscapes PNG records (~2.3 MB).
DEFAULT_SHUFFLE_MEMORY_BYTES = 1 << 30
# Shards read at once while training; more spreads I/O, fewer keeps memory small.
DEFAULT_CYCLE_LENGTH = 8
SAME = "same"
# Random stages of a seeded pipeline, each with a seed of its own (`_stage_seed`).
_FILE_ORDER, _RECORD_ORDER, _AUGMENTATION = range(3)


def _resize_unless_sized(image: tf.Tensor, size: tuple[int, int], resize: Resize,
                         dtype: tf.DType) -> tf.Tensor:
  """Returns `resize(image, size)`, or `image` (cast to `dtype`) when it already has that size.

  Shards converted with --resize to the input size are thus read without any resampling.
  """
  sized = tf.reduce_all(tf.equal(tf.shape(image)[:2], size))
  resized = tf.cond(sized, lambda: tf.cast(image, dtype), lambda: resize(image, size))
  return tf.ensure_shape(resized, [size[0], size[1], image.shape[-1]])


def _manifest_paths(files: Sequence[str]) -> list[str]:
  return sorted({shards.manifest_path_for_shard(f) for f in files})


def read_manifest(file_pattern: str | Sequence[str]) -> dict:
  """Returns the manifest of the split whose shards `file_pattern` matches.

  Raises:
    FileNotFoundError: when nothing matches or the manifest is missing.
    ValueError: when the pattern spans several splits.
  """
  paths = _manifest_paths(shards.match_files(file_pattern))
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


class ExampleFeature(Protocol):
  """A tensor derived from a parsed, augmented example, stored under `key` (a method's extra
  input that is cheaper or only possible in the input pipeline, e.g. superpixels)."""

  key: str

  def __call__(self, example: dict[str, tf.Tensor]) -> tf.Tensor:
    ...


def batch_features(images: np.ndarray | tf.Tensor,
                   features: Sequence[ExampleFeature]) -> dict[str, np.ndarray]:
  """The features of a batch of images built outside the pipeline (benches, tests), example by
  example as the pipeline computes them: key -> [B, ...]."""
  return {feature.key: np.stack([feature({"image": tf.constant(image)}).numpy()
                                 for image in np.asarray(images)])
          for feature in features}


@dataclasses.dataclass(frozen=True)
class Parser:
  """Turns a decoded record into a model input.

  Args:
    class_set: The classes to produce; its storage space must be the records'.
    image_size: (width, height) to resize images to, or None to keep their size.
    label_size: "same" (the image's output size), None (keep the stored size, for
      evaluation at full resolution) or (width, height).
    interpolation: Image resize filter, a key of INTERPOLATIONS (tfdaseg.data.resizing);
      labels are always resized nearest.
    augment: Random scale / crop / flip, or None.
    features: Derived entries added to every example after augmentation.
  """

  class_set: labels.ClassSet
  image_size: tuple[int, int] | None = None
  label_size: tuple[int, int] | str | None = SAME
  interpolation: str = DEFAULT_INTERPOLATION
  augment: augment_lib.AugmentConfig | None = None
  features: tuple[ExampleFeature, ...] = ()

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
    return self.finish(self.prepare(decoded), seed)

  def prepare(self, decoded: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """The deterministic half: resize and Caffe preprocessing (labels still storage ids)."""
    image, label = decoded["image"], decoded["label"]
    size = _hw(self.image_size)
    if size is not None:
      image = _resize_unless_sized(image, size, INTERPOLATIONS[self.interpolation], tf.float32)
    label_size = size if self.label_size == SAME else _hw(self.label_size)
    if label_size is not None:
      label = _resize_unless_sized(label, label_size, resize_label, tf.uint8)
    return {"image": preprocessing.caffe_preprocess(image), "label": label,
            "filename": decoded["filename"]}

  def finish(self, prepared: Mapping[str, tf.Tensor],
             seed: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
    """The random half on a `prepare` output: augmentation, the class-set remap, features."""
    image, label, pseudo_valid = prepared["image"], prepared["label"], None
    if self.augment is not None:
      image, label, pseudo_valid = augment_lib.augment_with_pseudo_mask(image, label, seed,
                                                                        self.augment)
    table = tf.constant(self.class_set.storage_to_class_table(), tf.int32)
    example = {
        "image": image,
        "label": tf.gather(table, tf.cast(label[..., 0], tf.int32)),
        "filename": prepared["filename"],
    }
    if pseudo_valid is not None:
      example[augment_lib.PSEUDO_VALID] = pseudo_valid
    for feature in self.features:
      example[feature.key] = feature(example)
    return example


def _filename(serialized: tf.Tensor) -> tf.Tensor:
  """The `image/filename` of a serialized record, parsed alone (no image decoding)."""
  return tf.io.parse_single_example(serialized, {schema.IMAGE_FILENAME: tf.io.FixedLenFeature(
      (), tf.string, default_value="")})[schema.IMAGE_FILENAME]


@dataclasses.dataclass(frozen=True)
class FilenameFilter:
  """Keeps only, or drops, the records whose image filename (`image/filename`) is listed.

  Args:
    names: The listed filenames (paths relative to the dataset root, as the converters store).
    keep: True keeps only the listed records; False drops them.
  """

  names: tuple[str, ...]
  keep: bool = True

  def __call__(self, serialized: tf.Tensor) -> tf.Tensor:
    """Whether the serialized record passes (bool scalar); parses only its filename."""
    listed = tf.reduce_any(tf.equal(_filename(serialized), tf.constant(self.names, tf.string)))
    return listed if self.keep else tf.logical_not(listed)


def list_filenames(file_pattern: str | Sequence[str]) -> list[str]:
  """The image filenames of every record of the split, in file order (one pass, no decoding).

  Raises:
    FileNotFoundError: when nothing matches.
  """
  names = tf.data.TFRecordDataset(shards.match_files(file_pattern)).map(
      _filename, num_parallel_calls=tf.data.AUTOTUNE)
  return [name.decode() for batch in names.batch(4096).as_numpy_iterator() for name in batch]


def _stage_seed(seed: int | None, stage: int) -> int | None:
  """A seed of its own for one random stage: stages seeded alike would draw the same stream."""
  if seed is None:
    return None
  return int(np.random.SeedSequence([seed, stage]).generate_state(1)[0])


def shuffle_buffer_size(listed: Sequence[integrity.ListedShard], memory_bytes: int) -> int:
  """Records the training shuffle buffer holds: all of `listed`, or what fits in `memory_bytes`.

  The buffer holds serialized records (it comes before decoding), so a record costs its share
  of its shard's bytes on disk.

  Args:
    listed: The shards this input pipeline reads.
    memory_bytes: The buffer's memory bound.

  Returns:
    The buffer size, at least 1.
  """
  records = sum(shard.records for shard in listed)
  num_bytes = sum(shard.num_bytes if shard.num_bytes is not None
                  else tf.io.gfile.stat(shard.path).length for shard in listed)
  return max(1, min(records, memory_bytes * records // max(num_bytes, 1)))


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
    shuffle_buffer: int | None = None,
    shuffle_memory_bytes: int = DEFAULT_SHUFFLE_MEMORY_BYTES,
    interpolation: str = DEFAULT_INTERPOLATION,
    cycle_length: int = DEFAULT_CYCLE_LENGTH,
    filenames: FilenameFilter | None = None,
) -> tf.data.Dataset:
  """Builds the input pipeline over converted shards.

  Training order: the converter wrote the pairs in a seeded random order
  (tfdaseg.data.tfrecord_writer), so every shard is a random sample of the split; here the
  shard order is reshuffled every epoch, `cycle_length` shards are interleaved record by
  record, and the records pass a shuffle buffer that holds this input pipeline's whole share
  of the split, or as many records as fit in `shuffle_memory_bytes` when that is less (the
  buffer holds serialized records: 1 GiB is ~450 of GTA5's 25k records). The reference draws
  from one shuffled list (AdaptSegNet train_gta2cityscapes_multi.py: DataLoader(shuffle=True)).

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
    seed: Makes shuffling and augmentation reproducible (and the order deterministic); a
      pipeline rebuilt with the same seed (a resumed run) repeats the same stream.
    augment: AugmentConfig (or a dict of its fields) or None (the reference's default).
    input_context: From `strategy.distribute_datasets_from_function`: reads only this input
      pipeline's share of the files, with the per-replica batch size.
    shuffle_buffer: Records in the shuffle buffer while training; None sizes it from the
      manifest (all records, within `shuffle_memory_bytes`).
    shuffle_memory_bytes: Memory bound of the automatically sized shuffle buffer.
    interpolation: Image resize filter: "bicubic" (antialiased, like the reference's PIL
      BICUBIC) or "bilinear" (cheaper, aliases when shrinking); see tfdaseg.data.resizing.
    cycle_length: Shards read in parallel while training.
    filenames: Reads only (or all but) the listed images: the records are filtered by their
      filename before the shuffle buffer (which then holds at most the listed count), so a
      few listed images of a large split cost a pass over its records' bytes per epoch.

  Returns:
    A dataset of {"image", "label", "filename"} batches. A shard that yields other than
    its manifest's record count (truncated, corrupt) fails the iteration with an
    `InvalidArgumentError` naming it.

  Raises:
    FileNotFoundError: when no file matches or a manifest is missing.
    ValueError: when the shards' storage space is not the class set's, a file is not a
      shard its manifest lists, or there are fewer files than input pipelines.
  """
  if isinstance(class_set, str):
    class_set = labels.get_class_set(class_set)
  parser = Parser(class_set, image_size, label_size, interpolation,
                  augment_lib.AugmentConfig.from_value(augment))
  aligned = make_aligned_dataset(
      [file_pattern], [parser], batch_size=batch_size, training=training, seed=seed,
      input_context=input_context, shuffle_buffer=shuffle_buffer,
      shuffle_memory_bytes=shuffle_memory_bytes, cycle_length=cycle_length, filenames=filenames)
  return aligned.map(lambda *batches: batches[0])


def _aligned_shards(file_patterns: Sequence[str | Sequence[str]], parsers: Sequence[Parser]
                    ) -> list[list[integrity.ListedShard]]:
  """The shards of each split, checked to hold the same record counts file by file.

  Raises:
    ValueError: naming the patterns, when a split's storage space is not its parser's or the
      splits are not aligned (another shard count, other record counts).
  """
  listed = []
  for pattern, parser in zip(file_patterns, parsers):
    files = shards.match_files(pattern)
    _check_class_space(files, parser.class_set)
    listed.append(integrity.listed_shards(files))
  for pattern, split in zip(file_patterns[1:], listed[1:]):
    counts, first = [s.records for s in split], [s.records for s in listed[0]]
    if counts != first:
      raise ValueError(f"{pattern!r} is not aligned with {file_patterns[0]!r}: its shards hold "
                       f"{counts} records, the other's {first} (make the copy with "
                       "tools/make_transformed_dataset.py)")
  return listed


def _check_filenames(records: tuple, patterns: Sequence) -> tuple:
  """Fails naming the patterns when aligned records are not of the same `image/filename`."""
  decoded = [schema.decode_example(r) for r in records]
  checks = [tf.debugging.Assert(tf.equal(decoded[0]["filename"], d["filename"]), [
      f"{patterns[0]!r} and {pattern!r} are not aligned: record of", decoded[0]["filename"],
      "meets", d["filename"]]) for pattern, d in zip(patterns[1:], decoded[1:])]
  if not checks:
    return tuple(decoded)
  with tf.control_dependencies(checks):
    return tuple(tf.nest.map_structure(tf.identity, d) for d in decoded)


def make_aligned_dataset(
    file_patterns: Sequence[str | Sequence[str]],
    parsers: Sequence[Parser],
    *,
    batch_size: int,
    training: bool,
    seed: int | None = None,
    input_context: tf.distribute.InputContext | None = None,
    shuffle_buffer: int | None = None,
    shuffle_memory_bytes: int = DEFAULT_SHUFFLE_MEMORY_BYTES,
    cycle_length: int = DEFAULT_CYCLE_LENGTH,
    filenames: FilenameFilter | None = None,
) -> tf.data.Dataset:
  """Reads content-aligned splits in lockstep: batch i of every split holds the same images.

  The splits must hold the same records in the same shards and order (a split and its copy by
  tools/make_transformed_dataset.py); record k of every split is read together, each parsed by
  its own parser with the same augmentation seed (the same crop and flip when the sizes agree).
  A record whose `image/filename` differs from its partner's fails the iteration naming the
  patterns. One split is `make_dataset`'s reading (see there for the order and the buffer).

  Args:
    file_patterns: One glob (or list of globs) per split.
    parsers: One parser per split.
    batch_size: Global batch size of every split; per replica with `input_context`.
    training: Repeat, shuffle files and records, drop the last partial batch; else one pass.
    seed: Shuffling and augmentation seed.
    input_context: Reads only this input pipeline's share of the files.
    shuffle_buffer: Records in the shuffle buffer; None sizes it from the manifests, within
      `shuffle_memory_bytes` over all the splits.
    shuffle_memory_bytes: Memory bound of the automatically sized buffer.
    cycle_length: Shards read in parallel while training.
    filenames: Reads only (or all but) the listed images, by the first split's filenames (see
      `make_dataset`).

  Returns:
    A dataset of tuples of {"image", "label", "filename"} batches, one per split.

  Raises:
    FileNotFoundError: when no file matches or a manifest is missing.
    ValueError: for a storage space that is not the parser's, splits that are not aligned, or
      fewer files than input pipelines.
  """
  listed = _aligned_shards(file_patterns, parsers)
  deterministic = seed is not None or not training
  num_files = len(listed[0])
  if input_context is not None:
    if input_context.num_input_pipelines > num_files:
      raise ValueError(f"{file_patterns[0]!r}: {num_files} files cannot be split over "
                       f"{input_context.num_input_pipelines} input pipelines; convert with "
                       "more shards")
    # As Dataset.shard: every n-th file, here so that the buffer is sized from this share.
    listed = [split[input_context.input_pipeline_id::input_context.num_input_pipelines]
              for split in listed]
    batch_size = input_context.get_per_replica_batch_size(batch_size)
  paths = tuple(tf.constant([s.path for s in split]) for split in listed)
  dataset = tf.data.Dataset.from_tensor_slices(
      (paths, tf.constant([s.records for s in listed[0]], tf.int64)))

  def read(split_paths: tuple, records: tf.Tensor) -> tf.data.Dataset:
    return tf.data.Dataset.zip(tuple(integrity.read_shard(p, records) for p in split_paths))

  if training:
    dataset = dataset.shuffle(len(listed[0]), seed=_stage_seed(seed, _FILE_ORDER),
                              reshuffle_each_iteration=True).repeat()
    dataset = dataset.interleave(
        read, cycle_length=min(cycle_length, len(listed[0])), block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if filenames is not None:
      dataset = dataset.filter(lambda *records: filenames(records[0]))
    if shuffle_buffer is None:
      shuffle_buffer = min(shuffle_buffer_size(split, shuffle_memory_bytes // len(listed))
                           for split in listed)
      if filenames is not None and filenames.keep:
        shuffle_buffer = min(shuffle_buffer, max(len(filenames.names), 1))
    dataset = dataset.shuffle(shuffle_buffer, seed=_stage_seed(seed, _RECORD_ORDER),
                              reshuffle_each_iteration=True)
  else:
    dataset = dataset.flat_map(read)
    if filenames is not None:
      dataset = dataset.filter(lambda *records: filenames(records[0]))

  augmented = any(parser.augment is not None for parser in parsers)

  def parse(*element) -> tuple:
    # Elements are (records, seed) when augmenting, else the records, unpacked by map.
    records, example_seed = element if augmented else (element, None)
    decoded = _check_filenames(records, file_patterns)
    return tuple(parser(d, example_seed) for parser, d in zip(parsers, decoded))

  if augmented:
    # One stateless seed per example, from a seeded stream: same seed, same augmentation.
    seeds = tf.data.Dataset.random(seed=_stage_seed(seed, _AUGMENTATION)).batch(
        2, drop_remainder=True)
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

