"""Names of the files a converted split consists of: sharded TFRecords plus a JSON manifest.

A split `{dataset}-{split}` in `output_dir` is the shards
`{dataset}-{split}-{i:05d}-of-{n:05d}.tfrecord` and the manifest `{dataset}-{split}.json`
(count, class space, per-class pixel counts, skipped files, ...). Shards are written under a
temporary name and renamed when complete, so a file with a shard's name is always whole.
"""

import os
import re
from typing import Sequence

import tensorflow as tf

_SHARD_RE = re.compile(r"^(?P<prefix>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.tfrecord$")
# Marks a JSON file as a split manifest written by tfdaseg's TFRecord writer.
MANIFEST_FORMAT = "tfdaseg-split-manifest-v1"
# Temporary names end in `.tmp-<pid>` (utils/files.py and the TFRecord writer use this suffix).
TMP_MARKER = ".tmp-"


def split_prefix(dataset: str, split: str) -> str:
  """Returns the file-name prefix every file of a split starts with ("gta5-train")."""
  return f"{dataset}-{split}"


def shard_name(dataset: str, split: str, index: int, num_shards: int) -> str:
  """Returns the file name of shard `index` of `num_shards` (no folder)."""
  return f"{split_prefix(dataset, split)}-{index:05d}-of-{num_shards:05d}.tfrecord"


def shard_glob(output_dir: str, dataset: str, split: str) -> str:
  """Returns a glob matching every shard of the split, whatever its shard count."""
  return os.path.join(output_dir, f"{split_prefix(dataset, split)}-?????-of-?????.tfrecord")


def manifest_path(output_dir: str, dataset: str, split: str) -> str:
  """Returns the path of the split's manifest."""
  return os.path.join(output_dir, f"{split_prefix(dataset, split)}.json")


def progress_path(output_dir: str, dataset: str, split: str) -> str:
  """Returns the path of the record of completed shards kept while a split is being written."""
  return os.path.join(output_dir, f"{split_prefix(dataset, split)}.progress.json")


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


def manifest_path_for_shard(shard_path: str) -> str:
  """Returns the manifest path belonging to a shard path.

  Raises:
    ValueError: when `shard_path` is not named like a shard.
  """
  folder, name = os.path.split(shard_path)
  match = _SHARD_RE.match(name)
  if not match:
    raise ValueError(f"{shard_path}: not a shard name (expected "
                     "{dataset}-{split}-NNNNN-of-NNNNN.tfrecord)")
  return os.path.join(folder, match.group("prefix") + ".json")


def remove_stale_temporaries(output_dir: str, dataset: str, split: str) -> list[str]:
  """Deletes temporary files an interrupted run of this split left behind.

  Returns:
    The deleted paths.
  """
  finals = (shard_glob(output_dir, dataset, split), manifest_path(output_dir, dataset, split),
            progress_path(output_dir, dataset, split))
  stale = [path for final in finals for path in tf.io.gfile.glob(f"{final}{TMP_MARKER}*")]
  for path in stale:
    tf.io.gfile.remove(path)
  return stale
