"""A few labelled target images: which images of the target train split the labelled streams read.

The semi-supervised setting (ASS, hierarchical region selection; REFERENCE.md "Semi-supervised
facts") trains on abundant labelled source data plus N labelled target images, N = 100, 200,
500, 1000 or all 2975 Cityscapes train images in the literature. `--target_labeled_count=N`
draws N images of the labelled target-domain streams' split, deterministically from
`--random_seed` (the same seed and split give the same images for every method);
`--target_labeled_list=FILE` names them instead (one filename per line, as the converters store
them, e.g. `leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png`). Either way the
chosen names are written to `<model_dir>/target_labeled.txt` (that file's format, so it can be
the list of another run). Every labelled stream of the target domain (`labelled_target`, and
`target_only`'s `target`) reads only those images; the unlabelled target stream reads the whole
split, or all but those with `--exclude_labeled_from_target`.
"""

import dataclasses
import os
from typing import Mapping

import numpy as np
import tensorflow as tf

from tfdaseg.data import pipeline
from tfdaseg.methods import TARGET
from tfdaseg.training.inputs import DataError, StreamConfig
from tfdaseg.utils.config_fields import ConfigError, field
from tfdaseg.utils.files import atomic_write_bytes

LIST_NAME = "target_labeled.txt"


@dataclasses.dataclass(frozen=True)
class LabelledTargetConfig:
  """Which target images are labelled in training.

  Args:
    target_labeled_count: Labelled target images drawn from the split with --random_seed
      (None: every image of the split).
    target_labeled_list: A file of filenames, one per line, instead of the draw.
    exclude_labeled_from_target: Also drop the labelled images from the unlabelled target stream.
  """

  target_labeled_count: int | None = field(
      None, "Labelled target images drawn (seeded by --random_seed) from the labelled target "
      "split (--labelled_target_train, default --target_train); the literature uses 100, 200, "
      "500, 1000 or all 2975 Cityscapes train images. Default: the whole split.", minimum=1)
  target_labeled_list: str | None = field(
      None, "File of the labelled target images' filenames, one per line (the format of "
      "<model_dir>/target_labeled.txt), instead of --target_labeled_count.")
  exclude_labeled_from_target: bool = field(
      False, "Drop the labelled target images from the unlabelled target stream (default: it "
      "reads the whole split, labelled images included).")

  @property
  def active(self) -> bool:
    """Whether a subset is chosen at all."""
    return self.target_labeled_count is not None or self.target_labeled_list is not None


def labelled_target_streams(streams: Mapping[str, StreamConfig]) -> list[StreamConfig]:
  """The labelled streams of the target domain (the ones the subset applies to)."""
  return [s for s in streams.values() if s.labelled and s.domain == TARGET]


def check(config: LabelledTargetConfig, streams: Mapping[str, StreamConfig],
          method_name: str) -> None:
  """Rejects subset flags that cannot apply (before any data is read).

  Raises:
    ConfigError: for both a count and a list, or a method without a labelled target stream.
  """
  if config.target_labeled_count is not None and config.target_labeled_list is not None:
    raise ConfigError("give --target_labeled_count or --target_labeled_list, not both")
  if config.active and not labelled_target_streams(streams):
    raise ConfigError(f"--target_labeled_count/--target_labeled_list: --method={method_name} "
                      "reads no labelled target stream")


def read_list(path: str) -> list[str]:
  """The filenames listed in `path` (one per line; blank lines skipped), in file order.

  Raises:
    DataError: naming the file, when it is missing or lists nothing or a name twice.
  """
  try:
    with tf.io.gfile.GFile(path, "r") as f:
      names = [line.strip() for line in f if line.strip()]
  except tf.errors.NotFoundError:
    raise DataError(f"--target_labeled_list={path}: no such file") from None
  if not names:
    raise DataError(f"--target_labeled_list={path}: lists no filename")
  if len(set(names)) != len(names):
    raise DataError(f"--target_labeled_list={path}: lists a filename twice")
  return names


def choose(available: list[str], config: LabelledTargetConfig, seed: int,
           flag: str) -> list[str]:
  """The labelled target images, sorted.

  Args:
    available: The filenames of the labelled split.
    config: The subset flags (`active`).
    seed: --random_seed: the same seed and split choose the same images.
    flag: The flag naming the split (for messages).

  Returns:
    The chosen filenames.

  Raises:
    DataError: for a count above the split's size or listed names the split lacks.
  """
  names = sorted(available)
  if config.target_labeled_list is not None:
    listed = read_list(config.target_labeled_list)
    missing = sorted(set(listed) - set(names))
    if missing:
      raise DataError(f"--target_labeled_list={config.target_labeled_list}: {len(missing)} "
                      f"names are not in --{flag}, e.g. {missing[:3]}")
    return sorted(listed)
  count = config.target_labeled_count
  if count > len(names):
    raise DataError(f"--target_labeled_count={count}: --{flag} holds only {len(names)} images")
  picked = np.random.default_rng(seed).choice(len(names), size=count, replace=False)
  return [names[i] for i in sorted(picked)]


def write_list(model_dir: str, names: list[str]) -> None:
  """Writes `<model_dir>/target_labeled.txt` atomically; a resumed run must choose the same.

  Raises:
    DataError: when the folder already records other images (another run's folder).
  """
  path = os.path.join(model_dir, LIST_NAME)
  text = "".join(f"{name}\n" for name in names)
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path, "r") as f:
      if f.read() != text:
        raise DataError(f"{path} lists other labelled target images than this run chooses "
                        "(other flags or data): use a new --model_dir")
    return
  tf.io.gfile.makedirs(model_dir)
  atomic_write_bytes(path, text.encode())


def apply(streams: Mapping[str, StreamConfig], config: LabelledTargetConfig, *, seed: int,
          model_dir: str, write: bool = True) -> dict[str, StreamConfig]:
  """The streams with the labelled target subset applied (unchanged when none is asked for).

  Args:
    streams: The checked streams (`inputs.check_streams`).
    config: The subset flags.
    seed: --random_seed.
    model_dir: Where the chosen names are written.
    write: Whether to write them (the chief does).

  Returns:
    Stream name -> config, the labelled target streams reading the chosen images only.

  Raises:
    DataError: for a count or list that does not fit the split.
  """
  if not config.active:
    return dict(streams)
  labelled = labelled_target_streams(streams)
  split = labelled[0]
  for stream in labelled[1:]:
    if stream.pattern != split.pattern:
      raise DataError(f"--{stream.flag} and --{split.flag} differ: the labelled target streams "
                      "must read one split")
  available = pipeline.list_filenames(split.pattern)
  names = choose(available, config, seed, split.flag)
  if config.exclude_labeled_from_target and len(names) == len(set(available)):
    raise DataError("--exclude_labeled_from_target with every image of --"
                    f"{split.flag} labelled leaves the unlabelled target stream empty")
  if write:
    write_list(model_dir, names)
  chosen = pipeline.FilenameFilter(tuple(names), keep=True)
  excluded = pipeline.FilenameFilter(tuple(names), keep=False)
  result = {}
  for name, stream in streams.items():
    if stream.domain == TARGET and stream.labelled:
      stream = dataclasses.replace(stream, filenames=chosen)
    elif stream.domain == TARGET and config.exclude_labeled_from_target:
      stream = dataclasses.replace(stream, filenames=excluded)
    result[name] = stream
  return result
