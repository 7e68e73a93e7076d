"""Per-image class statistics of a converted split: where each record is and which classes it shows.

DAFormer's rare class sampling needs, for every source image, the pixels of each class
(DAFormer tools/convert_datasets/gta.py writes them as `sample_class_stats.json`). Here they
sit next to the split's manifest, in `{dataset}-{split}-class_stats.json`:

  {"format": ..., "fingerprint": <the manifest's>, "class_space": ..., "shards": [names],
   "records": [[shard index, byte offset, byte length, {storage id: pixels}], ...]}

in shard and record order, one entry per record. The byte offset and length of each record
let a sampler read one record of a large split without reading the records before it
(`tfdaseg.data.rare_class_sampling`). The converter writes the file for every labelled split,
from the counts its encoder makes of each label it encodes (`record_pixels`), so a conversion
decodes every label once; `python tools/compute_class_stats.py --data=PATTERN` reads the labels
of an older conversion back (`compute_class_stats`).
Counts are of the stored label (the converter's storage ids, at the stored size), as
DAFormer counts the full-resolution label.
"""

import io
import os
import time
from typing import Sequence

import numpy as np
import tensorflow as tf
from absl import logging
from PIL import Image

from tfdaseg.data import integrity, labels, schema, shards
from tfdaseg.utils.files import atomic_write_json, read_json

CLASS_STATS_FORMAT = "tfdaseg-class-stats-v1"


def class_stats_path(manifest_file: str) -> str:
  """The statistics file of the split whose manifest is `manifest_file`."""
  return manifest_file[:-len(".json")] + "-class_stats.json"


def label_pixels(serialized: bytes, source: str) -> dict[str, int]:
  """Pixels per storage id (ignore excluded) of one serialized record's label.

  Args:
    serialized: A record written by the converters.
    source: Where it is (for messages).

  Returns:
    {storage id as a string: pixels}, ids with no pixel left out (as DAFormer's statistics).

  Raises:
    ValueError: naming `source` for a record without a label.
  """
  feature = tf.train.Example.FromString(serialized).features.feature
  encoded = feature[schema.LABEL_ENCODED].bytes_list.value
  if not encoded or not encoded[0]:
    raise ValueError(f"{source}: the record has no label (a split converted with --unlabeled)")
  label = np.asarray(Image.open(io.BytesIO(encoded[0])))
  counts = np.bincount(label.ravel(), minlength=256)
  counts[labels.IGNORE_ID] = 0
  return {str(i): int(counts[i]) for i in np.nonzero(counts)[0]}


def record_pixels(class_pixels: np.ndarray) -> dict[str, int]:
  """A record's entry from its encoder's counts (`record_encoder.EncodedExample.class_pixels`).

  Args:
    class_pixels: int [num storage classes + 1]: pixels per storage id, then ignored pixels.

  Returns:
    {storage id as a string: pixels} as `label_pixels` gives for the stored label.
  """
  return {str(i): int(class_pixels[i]) for i in np.nonzero(class_pixels[:-1])[0]}


def write_class_stats(manifest_file: str, manifest: dict, records: list[list]) -> str:
  """Writes a split's statistics file next to its manifest.

  Args:
    manifest_file: Where the split's manifest is (or is about to be) written.
    manifest: Its content.
    records: [shard index, byte offset, byte length, {storage id: pixels}] of every record, in
      shard and record order.

  Returns:
    The path written.

  Raises:
    ValueError: when `records` does not hold one entry per record of the manifest.
  """
  if len(records) != manifest["count"]:
    raise ValueError(f"{manifest_file}: the shards hold {len(records)} records, the manifest "
                     f"lists {manifest['count']}")
  output = class_stats_path(manifest_file)
  atomic_write_json(output, {"format": CLASS_STATS_FORMAT, "fingerprint": manifest["fingerprint"],
                             "class_space": manifest["class_space"],
                             "shards": manifest["shards"], "records": records})
  return output


def compute_class_stats(file_pattern: str | Sequence[str]) -> str:
  """Reads every label of a converted split back and writes its statistics file.

  Args:
    file_pattern: The split's shards.

  Returns:
    The path written.

  Raises:
    FileNotFoundError: when nothing matches or the manifest is missing.
    ValueError: for shards of several splits, a file its manifest does not list, a truncated
      or corrupt record or an unlabelled record.
  """
  files = shards.match_files(file_pattern)
  manifest_files = sorted({shards.manifest_path_for_shard(f) for f in files})
  if len(manifest_files) > 1:
    raise ValueError(f"{file_pattern!r} matches shards of several splits: {manifest_files}")
  manifest_file = manifest_files[0]
  manifest = read_json(manifest_file)
  folder = os.path.dirname(manifest_file)
  records, start = [], time.monotonic()
  for index, name in enumerate(manifest["shards"]):
    path = os.path.join(folder, name)
    for offset, length in integrity.record_spans(path):
      data = integrity.read_record(path, offset, length)
      records.append([index, offset, length, label_pixels(data, f"{path}@{offset}")])
    logging.info("%s: %d of %d shards, %d records (%.1f records/s)", manifest_file, index + 1,
                 len(manifest["shards"]), len(records),
                 len(records) / max(time.monotonic() - start, 1e-9))
  return write_class_stats(manifest_file, manifest, records)


def read_class_stats(file_pattern: str | Sequence[str]) -> tuple[dict, list[str]]:
  """The statistics of a split, checked against its manifest.

  Args:
    file_pattern: The split's shards.

  Returns:
    (the statistics, the shard paths in their order).

  Raises:
    FileNotFoundError: naming the statistics file and the command that writes it, when missing.
    ValueError: naming the file, when it belongs to another conversion of the split.
  """
  manifest_file = shards.manifest_path_for_shard(shards.match_files(file_pattern)[0])
  path = class_stats_path(manifest_file)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"{path}: no class statistics for this split (converted before "
                            "they were recorded); write them with `python "
                            f"tools/compute_class_stats.py --data={file_pattern}`")
  stats = read_json(path)
  manifest = read_json(manifest_file)
  if stats.get("format") != CLASS_STATS_FORMAT or stats.get("fingerprint") != manifest[
      "fingerprint"]:
    raise ValueError(f"{path}: not the statistics of the conversion in {manifest_file} (another "
                     "conversion of the split?); write them again with `python "
                     f"tools/compute_class_stats.py --data={file_pattern}`")
  folder = os.path.dirname(manifest_file)
  return stats, [os.path.join(folder, name) for name in stats["shards"]]
