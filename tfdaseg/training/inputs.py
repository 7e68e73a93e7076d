"""The training run's input: data checks against the manifests, and the per-worker datasets.

Each stream the method reads (source, target) is a `tfdaseg.data.pipeline.make_dataset` training
stream that repeats and shuffles on its own; the streams are zipped into {stream: batch}.
"""

import dataclasses
from typing import Callable

import tensorflow as tf

from tfdaseg.data import labels, pipeline
from tfdaseg.methods import Method, SOURCE, TARGET
from tfdaseg.training.config import TrainConfig
from tfdaseg.training.loop import DatasetFn, Preview


class DataError(ValueError):
  """A data flag that names no data, or data that does not fit the run."""


@dataclasses.dataclass(frozen=True)
class Stream:
  """One training stream.

  Args:
    flag: The flag naming its files (for messages).
    pattern: TFRecord file pattern.
    class_set: The class set its labels are read into.
    size: (width, height) images are resized to.
  """

  flag: str
  pattern: str
  class_set: labels.ClassSet
  size: tuple[int, int]


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
  if needs_labels and not manifest.get("labelled", True):
    raise DataError(f"--{flag}={pattern}: the split was converted without labels "
                    "(--unlabeled) but this run needs its labels")
  return manifest


def training_streams(config: TrainConfig, method: Method) -> dict[str, Stream]:
  """The method's streams, each checked against its manifest.

  Raises:
    DataError: for a missing pattern, a class-space mismatch or missing labels.
  """
  available = {
      SOURCE: Stream("source_train", config.source_train, config.model_class_set,
                     config.source_size),
      TARGET: Stream("target_train", config.target_train, config.target_classes,
                     config.target_size),
  }
  streams = {name: available[name] for name in method.streams}
  for name, stream in streams.items():
    check_split(stream.flag, stream.pattern, stream.class_set,
                needs_labels=name in method.labelled_streams)
  return streams


def training_dataset_fn(streams: dict[str, Stream], batch_size: int) -> DatasetFn:
  """A `DatasetFn`: every stream at its size, zipped; `batch_size` is the global batch."""

  def build(context: tf.distribute.InputContext, seed: int) -> tf.data.Dataset:
    return tf.data.Dataset.zip({
        name: pipeline.make_dataset(stream.pattern, class_set=stream.class_set.name,
                                    image_size=stream.size, batch_size=batch_size, training=True,
                                    seed=seed + index, input_context=context)
        for index, (name, stream) in enumerate(streams.items())})

  return build


def validation_dataset_fn(config: TrainConfig) -> Callable[[], tf.data.Dataset]:
  """The --target_val split at the target input size, labels at full size, one pass.

  Raises:
    DataError: for a missing pattern or a class-space mismatch.
  """
  check_split("target_val", config.target_val, config.target_classes, needs_labels=True)
  return lambda: pipeline.make_dataset(config.target_val, class_set=config.target_classes.name,
                                       image_size=config.target_size, label_size=None,
                                       batch_size=1, training=False)


def preview(dataset_fn: DatasetFn, palette: tuple, seed: int) -> Preview:
  """The first batch of every stream, for the prediction grids in TensorBoard."""
  batch = next(iter(dataset_fn(tf.distribute.InputContext(), seed)))
  return Preview({name: {"image": b["image"], "label": b["label"]} for name, b in batch.items()},
                 palette)
