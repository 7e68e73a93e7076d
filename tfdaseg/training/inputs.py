"""The training run's streams as data: their flags, their checks against the manifests, the datasets.

A stream is a `StreamConfig` (TFRecord pattern, labelled or not, class set, input size, batch
size, augmentation). A method declares the streams it reads (`Method.streams`: name ->
`StreamSpec(labelled, domain)`); every stream name any registered method declares gets the same
flags, `--{name}_train`, `--{name}_size`, `--{name}_batch_size`, `--{name}_class_set` and
`--{name}_augment`, whose unset values fall back to the stream's domain (source: `--input_size`,
`--class_set`; target: `--input_size_target`, `--target_class_set`) and to `--batch_size`; a stream named other than its domain without its own `--{name}_train` reads
its domain's split (`--labelled_target_train` defaults to `--target_train`). The
reference's `--source_train`, `--target_train`, `--input_size` and `--input_size_target` are these
flags for the streams "source" and "target". A new stream needs no code here. Which images of a
split a stream reads (a few labelled target images) is `tfdaseg.training.labelled_target`'s.

Each stream is a `tfdaseg.data.pipeline.make_dataset` training stream that repeats and shuffles
on its own; the streams are zipped into {stream: batch}.
"""

import dataclasses
import json
from typing import Callable, Mapping

import tensorflow as tf
from absl import flags

from tfdaseg import methods
from tfdaseg.data import class_stats, integrity, labels, pipeline
from tfdaseg.data.rare_class_sampling import RareClassSampling, make_rare_class_dataset
from tfdaseg.data.augment import AugmentConfig
from tfdaseg.data.resizing import DEFAULT_INTERPOLATION
from tfdaseg.methods import SOURCE, TARGET, Method
from tfdaseg.training.loop import DatasetFn, Preview
from tfdaseg.utils.config_fields import ConfigError

# The discriminators halve their input five times (AdaptSegNet FCDiscriminator).
MIN_INPUT_SIZE = 32
# Flags of the reference for the two classic streams: (stream, key) -> flag name.
REFERENCE_FLAGS = {(SOURCE, "size"): "input_size", (TARGET, "size"): "input_size_target",
                   (SOURCE, "class_set"): "class_set", (TARGET, "class_set"): "target_class_set"}
# Default sizes of the domains (reference: GTA5 1280x720, Cityscapes 1024x512).
DOMAIN_SIZES = {SOURCE: (1280, 720), TARGET: (1024, 512)}


class DataError(ValueError):
  """A data flag that names no data, or data that does not fit the run."""


@dataclasses.dataclass(frozen=True)
class StreamConfig:
  """One training stream.

  Args:
    name: The stream's name ("source", "target", "labelled_target", ...).
    pattern: TFRecord file pattern.
    labelled: Whether its labels are read (checked against the manifest).
    class_set: The class set its labels are read into.
    size: (width, height) images are resized to.
    batch_size: Global batch size of the stream.
    augment: Its augmentations (None: the reference's none).
    domain: "source" or "target".
    pattern_flag: The flag its pattern came from ("" : its own `--{name}_train`).
    filenames: Reads only (or all but) these images of the split (None: all).
    aligned_with: The stream it is read in lockstep with (`StreamSpec.aligned_with`), or None.
    rare_class_sampling: Draw it by rare class sampling with these settings (None: read the
      split in shuffled order).
    features: Entries derived from each example in the pipeline (`Method.stream_features`).
  """

  name: str
  pattern: str | None
  labelled: bool
  class_set: labels.ClassSet
  size: tuple[int, int]
  batch_size: int
  augment: AugmentConfig | None = None
  domain: str = SOURCE
  pattern_flag: str = ""
  filenames: pipeline.FilenameFilter | None = None
  aligned_with: str | None = None
  rare_class_sampling: RareClassSampling | None = None
  features: tuple[pipeline.ExampleFeature, ...] = ()

  @property
  def output_size(self) -> tuple[int, int]:
    """(width, height) of its training images: the crop when there is one, else `size`."""
    if self.augment is not None and self.augment.crop_size is not None:
      return tuple(self.augment.crop_size)
    return self.size

  @property
  def flag(self) -> str:
    """The flag naming its files (for messages)."""
    return self.pattern_flag or stream_flag(self.name, "train")


def stream_flag(stream: str, key: str) -> str:
  """The flag of one setting of a stream ("train" is the file pattern)."""
  return REFERENCE_FLAGS.get((stream, key), f"{stream}_{key}")


def declared_streams() -> dict[str, str]:
  """Stream name -> domain, over every registered method."""
  found = {}
  for name in methods.METHODS.names():
    for stream, spec in methods.METHODS.get(name).streams.items():
      found.setdefault(stream, spec.domain)
  return found


def parse_size(value, name: str) -> tuple[int, int]:
  """Parses "W,H" (a string or the list absl makes of it) into (width, height).

  Raises:
    ConfigError: naming the flag, when malformed or below MIN_INPUT_SIZE.
  """
  text = ",".join(value) if isinstance(value, (list, tuple)) else str(value)
  try:
    width, height = (int(part) for part in text.split(","))
  except ValueError:
    raise ConfigError(f"--{name}={text!r}: expected W,H (e.g. 1280,720)") from None
  if min(width, height) < MIN_INPUT_SIZE:
    raise ConfigError(f"--{name}={text!r}: width and height must be >= {MIN_INPUT_SIZE} (the "
                      "discriminator downsamples by 32, the generator by 8)")
  return width, height


def define_stream_flags(fv: flags.FlagValues) -> None:
  """Declares the flags of every declared stream on `fv` (see the module docstring)."""
  d = dict(flag_values=fv)
  for stream, domain in declared_streams().items():
    flags.DEFINE_string(stream_flag(stream, "train"), None, f"TFRecord file pattern of the "
                        f"{stream} stream (e.g. data/gta5-train-*.tfrecord).", **d)
    default_size = DOMAIN_SIZES.get(stream)
    flags.DEFINE_string(stream_flag(stream, "size"), default_size and "%d,%d" % default_size,
                        f"Training size W,H of the {stream} stream (default: the {domain} "
                        "domain's; reference 1280,720 for GTA5, 1024,512 for Cityscapes).", **d)
    flags.DEFINE_integer(stream_flag(stream, "batch_size"), None, f"Global batch of the "
                         f"{stream} stream (default --batch_size).", **d)
    if stream_flag(stream, "class_set") not in fv:  # the domains' are the data section's
      flags.DEFINE_string(stream_flag(stream, "class_set"), None, f"Class set of the {stream} "
                          f"stream's labels (default: the {domain} domain's).", **d)
    flags.DEFINE_string(stream_flag(stream, "augment"), None, f"JSON of the {stream} stream's "
                        "augmentations (tfdaseg.data.augment.AugmentConfig fields, e.g. "
                        '{"crop_size": [512, 512], "hflip": true}); default none (reference).',
                        **d)


def _augment(text: str | None, flag: str) -> AugmentConfig | None:
  if not text:
    return None
  try:
    return AugmentConfig.from_value(json.loads(text))
  except (ValueError, TypeError) as e:
    raise ConfigError(f"--{flag}={text}: {e}") from None


def stream_configs(fv: flags.FlagValues, method: type[Method], *, batch_size: int,
                   domain_class_sets: Mapping[str, str]) -> dict[str, StreamConfig]:
  """The method's streams from the parsed flags.

  Args:
    fv: Parsed flags (`define_stream_flags`).
    method: The method class (its `streams`).
    batch_size: The default batch size (--batch_size).
    domain_class_sets: Domain -> class set name (--class_set, --target_class_set).

  Returns:
    Stream name -> config, in the method's order.

  Raises:
    ConfigError: naming the flag, for a size, class set or augmentation that does not parse.
  """
  streams = {}
  for name, spec in method.streams.items():
    def value(key: str, name: str = name):
      return fv[stream_flag(name, key)].value
    size_flag = stream_flag(name, "size")
    if value("size") is None and spec.domain != name:
      size_flag = stream_flag(spec.domain, "size")
    class_set = value("class_set") or domain_class_sets[spec.domain]
    if class_set not in labels.CLASS_SETS:
      raise ConfigError(f"unknown class set {class_set!r} of stream {name}; known: "
                        f"{', '.join(labels.CLASS_SETS)}")
    stream_batch = value("batch_size") or batch_size
    if stream_batch < 1:
      raise ConfigError(f"--{stream_flag(name, 'batch_size')}={stream_batch} must be >= 1")
    pattern_flag = stream_flag(name, "train")
    if value("train") is None and spec.domain != name:
      pattern_flag = stream_flag(spec.domain, "train")
    streams[name] = StreamConfig(
        name=name, pattern=fv[pattern_flag].value, labelled=spec.labelled, domain=spec.domain,
        pattern_flag=pattern_flag,
        class_set=labels.get_class_set(class_set),
        size=parse_size(fv[size_flag].value, size_flag), batch_size=stream_batch,
        augment=_augment(value("augment"), stream_flag(name, "augment")),
        aligned_with=spec.aligned_with)
  for stream in streams.values():
    if stream.aligned_with is not None:
      _check_alignable(stream, streams[stream.aligned_with])
  return streams


def _check_alignable(stream: StreamConfig, partner: StreamConfig) -> None:
  """Aligned streams are batched together and compared pixel for pixel.

  Raises:
    ConfigError: naming the flags, when their sizes or batch sizes differ.
  """
  if partner.aligned_with is not None:
    raise ConfigError(f"stream {stream.name} is aligned with {partner.name}, which is aligned "
                      "itself: align every stream with the same one")
  for key, mine, theirs in (("size", stream.size, partner.size),
                            ("batch_size", stream.batch_size, partner.batch_size)):
    if mine != theirs:
      raise ConfigError(f"--{stream_flag(stream.name, key)} ({mine}) must equal "
                        f"--{stream_flag(partner.name, key)} ({theirs}): the {stream.name} "
                        f"stream is read in lockstep with the {partner.name} stream")


def check_split(flag: str, pattern: str, class_set: labels.ClassSet,
                needs_labels: bool) -> dict:
  """Checks that `pattern` names TFRecords whose storage space `class_set` reads.

  Args:
    flag: The flag that names the split (for messages).
    pattern: Its TFRecord file pattern.
    class_set: The class set its labels are read into.
    needs_labels: Whether the split must be labelled.

  Returns:
    The split's manifest.

  Raises:
    DataError: naming the flag and the problem.
  """
  if not tf.io.gfile.glob(pattern):
    raise DataError(f"--{flag}={pattern}: no file matches this pattern")
  try:
    manifest = pipeline.read_manifest(pattern)
  except (FileNotFoundError, ValueError) as e:
    raise DataError(f"--{flag}={pattern}: {e}") from None
  space = manifest.get("class_space")
  if space != class_set.storage:
    raise DataError(f"--{flag}={pattern}: the data holds {space!r} labels but class set "
                    f"{class_set.name!r} reads {class_set.storage!r} (check --class_set / "
                    f"--target_class_set)")
  if not manifest.get("count"):
    raise DataError(f"--{flag}={pattern}: the manifest lists no images")
  try:
    integrity.check_shards(pattern)
  except (FileNotFoundError, ValueError) as e:
    raise DataError(f"--{flag}={pattern}: {e}") from None
  if needs_labels and not manifest.get("labelled", True):
    raise DataError(f"--{flag}={pattern}: the split was converted without labels "
                    "(--unlabeled) but this run needs its labels")
  return manifest


def check_streams(streams: Mapping[str, StreamConfig]) -> None:
  """Checks every stream against its manifest.

  Raises:
    DataError: for a missing pattern, a class-space mismatch, missing labels, or an aligned
      stream whose shards do not hold its partner's record counts.
  """
  manifests = {name: check_split(stream.flag, stream.pattern, stream.class_set,
                                 needs_labels=stream.labelled)
               for name, stream in streams.items()}
  for name, stream in streams.items():
    if stream.aligned_with is None:
      continue
    partner = streams[stream.aligned_with]
    mine, theirs = manifests[name], manifests[stream.aligned_with]
    if mine["shard_lengths"] != theirs["shard_lengths"]:
      raise DataError(
          f"--{stream.flag}={stream.pattern}: not content-aligned with --{partner.flag}="
          f"{partner.pattern} (its shards hold {mine['shard_lengths']} records, the other's "
          f"{theirs['shard_lengths']}); the {name} stream needs, for every image, the same "
          f"image of the other domain in the same place: write it with "
          "tools/make_transformed_dataset.py")


def apply_rare_class_sampling(streams: Mapping[str, StreamConfig],
                              options: RareClassSampling) -> dict[str, StreamConfig]:
  """The streams with the source stream drawn by rare class sampling, if `options.enabled`.

  DAFormer samples the source images only (mmseg/datasets/uda_dataset.py: the target image of
  an element is drawn uniformly).

  Raises:
    DataError: naming the flag, for a method without a source stream, a source stream read in
      lockstep with another, or a split whose class statistics are missing or stale.
  """
  if not options.enabled:
    return dict(streams)
  source = streams.get(SOURCE)
  if source is None:
    raise DataError(f"--rare_class_sampling: the method reads no {SOURCE} stream")
  if source.aligned_with or any(s.aligned_with == SOURCE for s in streams.values()):
    raise DataError("--rare_class_sampling: the source stream is read in lockstep with another "
                    "stream, which rare class sampling cannot draw alike")
  if source.filenames is not None:
    raise DataError("--rare_class_sampling: the source stream reads a list of images only")
  try:
    class_stats.read_class_stats(source.pattern)
  except (FileNotFoundError, ValueError) as e:
    raise DataError(f"--{source.flag}={source.pattern}: {e}") from None
  return {**streams, SOURCE: dataclasses.replace(source, rare_class_sampling=options)}


def apply_stream_features(streams: Mapping[str, StreamConfig],
                          features: Mapping[str, tuple[pipeline.ExampleFeature, ...]]
                          ) -> dict[str, StreamConfig]:
  """The streams with each one's derived features (`Method.stream_features`) set.

  Raises:
    ValueError: for a feature of a stream the method does not read.
  """
  unknown = set(features) - set(streams)
  if unknown:
    raise ValueError(f"features of streams the method does not read: {sorted(unknown)}")
  return {name: dataclasses.replace(stream, features=tuple(features.get(name, ())))
          for name, stream in streams.items()}


def training_dataset_fn(streams: Mapping[str, StreamConfig],
                        interpolation: str = DEFAULT_INTERPOLATION) -> DatasetFn:
  """A `DatasetFn`: every stream at its size and global batch size, zipped; images resized with
  `interpolation` ("bicubic" like the reference's PIL, or "bilinear")."""

  def parser(stream: StreamConfig) -> pipeline.Parser:
    return pipeline.Parser(stream.class_set, stream.size, pipeline.SAME, interpolation,
                           stream.augment, stream.features)

  # Each stream that is not aligned with another leads a group: itself and the streams aligned
  # with it, read by one pipeline.
  groups = {name: [name] + [other for other, s in streams.items() if s.aligned_with == name]
            for name, stream in streams.items() if stream.aligned_with is None}

  places = {member: (leader, position) for leader, members in groups.items()
            for position, member in enumerate(members)}

  def unpack(grouped: dict) -> dict:
    return {name: grouped[places[name][0]][places[name][1]] for name in streams}

  def read(leader: StreamConfig, members: list[str], context: tf.distribute.InputContext,
           seed: int) -> tf.data.Dataset:
    if leader.rare_class_sampling is not None:
      return make_rare_class_dataset(
          leader.pattern, parser(leader), batch_size=leader.batch_size, seed=seed,
          options=leader.rare_class_sampling, input_context=context).map(lambda b: (b,))
    return pipeline.make_aligned_dataset(
        [streams[member].pattern for member in members],
        [parser(streams[member]) for member in members], batch_size=leader.batch_size,
        training=True, seed=seed, input_context=context, filenames=leader.filenames)

  def build(context: tf.distribute.InputContext, seed: int) -> tf.data.Dataset:
    order = list(streams)
    grouped = {leader: read(streams[leader], members, context, seed + order.index(leader))
               for leader, members in groups.items()}
    return tf.data.Dataset.zip(grouped).map(unpack)

  return build


def validation_dataset_fn(pattern: str, class_set: labels.ClassSet, size: tuple[int, int],
                          interpolation: str = DEFAULT_INTERPOLATION
                          ) -> Callable[[], tf.data.Dataset]:
  """The --target_val split at the target input size, labels at full size, one pass.

  Raises:
    DataError: for a missing pattern or a class-space mismatch.
  """
  check_split("target_val", pattern, class_set, needs_labels=True)
  return lambda: pipeline.make_dataset(pattern, class_set=class_set.name, image_size=size,
                                       label_size=None, batch_size=1, training=False,
                                       interpolation=interpolation)


def preview(dataset_fn: DatasetFn, palette: tuple, seed: int) -> Preview:
  """The first batch of every stream, for the prediction grids in TensorBoard."""
  batch = next(iter(dataset_fn(tf.distribute.InputContext(), seed)))
  return Preview({name: {"image": b["image"], "label": b["label"]} for name, b in batch.items()},
                 palette)
