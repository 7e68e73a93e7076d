"""TFDS metadata for converted splits, so that `tfds.builder_from_directory(output_dir)` reads them.

Writes `dataset_info.json` and `features.json` describing every split whose manifest lies in
the folder. TFDS features cannot mark the label as optional, so the metadata is written only
when all splits in the folder belong to one dataset and agree on having labels (and image-level
class labels); otherwise it is removed and a warning says why. The shards themselves are
unchanged either way: tfdaseg's own pipeline does not need this metadata.
"""

import os

from absl import logging
import tensorflow as tf
import tensorflow_datasets as tfds

from tfdaseg.data import shards
from tfdaseg.utils.files import read_json

DATASET_INFO = "dataset_info.json"
FEATURES = "features.json"
VERSION = "1.0.0"


def features(labelled: bool, class_labels: bool) -> tfds.features.FeaturesDict:
  """Describes our records (schema.py) as TFDS features; nested keys flatten to "image/encoded"...

  Args:
    labelled: Whether records carry the segmentation label.
    class_labels: Whether records carry `image/class/label`.
  """
  image = {
      "encoded": tfds.features.Image(shape=(None, None, 3)),
      "format": tfds.features.Text(),
      "height": tfds.features.Scalar(dtype=tf.int64),
      "width": tfds.features.Scalar(dtype=tf.int64),
      "filename": tfds.features.Text(),
  }
  if labelled:
    image["segmentation"] = {"class": {
        "encoded": tfds.features.Image(shape=(None, None, 1)),
        "format": tfds.features.Text(),
    }}
  if class_labels:
    image["class"] = {"label": tfds.features.Tensor(shape=(None,), dtype=tf.int64)}
  return tfds.features.FeaturesDict({"image": image})


def find_manifests(output_dir: str) -> list[dict]:
  """Returns the manifests of the converted splits in `output_dir`, sorted by file name."""
  found = []
  for path in sorted(tf.io.gfile.glob(os.path.join(output_dir, "*.json"))):
    name = os.path.basename(path)
    if name in (DATASET_INFO, FEATURES) or name.endswith(".progress.json"):
      continue
    manifest = read_json(path)
    if isinstance(manifest, dict) and manifest.get("format") == shards.MANIFEST_FORMAT:
      found.append(manifest)
  return found


def _remove_metadata(output_dir: str) -> None:
  for name in (DATASET_INFO, FEATURES):
    path = os.path.join(output_dir, name)
    if tf.io.gfile.exists(path):
      tf.io.gfile.remove(path)


def write_tfds_metadata(output_dir: str) -> bool:
  """Writes (or refreshes) the TFDS metadata of `output_dir` from its manifests.

  Args:
    output_dir: A folder of converted splits.

  Returns:
    True when the metadata was written; False when the splits cannot share one description
    (different datasets, or labelled and unlabelled splits side by side).
  """
  manifests = find_manifests(output_dir)
  if not manifests:
    return False
  kinds = {(m["dataset"], m["labelled"], m["class_labels"]) for m in manifests}
  if len(kinds) > 1:
    logging.warning(
        "%s: not writing TFDS metadata: its splits differ in dataset, labels or class labels "
        "(%s); TFDS features cannot mark a feature optional. Put such splits in separate "
        "folders to read them with tfds.builder_from_directory.", output_dir, sorted(kinds))
    _remove_metadata(output_dir)
    return False
  dataset, labelled, class_labels = kinds.pop()
  split_infos = []
  for manifest in manifests:
    template = tfds.core.ShardedFileTemplate(
        data_dir=output_dir,
        template="{DATASET}-{SPLIT}-{SHARD_X_OF_Y}.{FILEFORMAT}",
        dataset_name=dataset,
        split=manifest["split"],
        filetype_suffix="tfrecord")
    split_infos.append(tfds.core.SplitInfo(
        name=manifest["split"],
        shard_lengths=list(manifest["shard_lengths"]),
        num_bytes=int(manifest["num_bytes"]),
        filename_template=template))
  info = tfds.core.DatasetInfo(
      builder=tfds.core.DatasetIdentity(
          name=dataset, version=VERSION, data_dir=output_dir, module_name=__name__),
      description=f"{dataset} converted by tfdaseg (storage space {manifests[0]['class_space']}).",
      features=features(labelled, class_labels),
      split_dict=tfds.core.SplitDict(split_infos),
  )
  # Written to a scratch folder first, then renamed into place file by file, so a reader never
  # sees a half-written description.
  scratch = os.path.join(output_dir, f".tfds-metadata{shards.TMP_MARKER}{os.getpid()}")
  tf.io.gfile.makedirs(scratch)
  try:
    info.write_to_directory(scratch)
    for name in (FEATURES, DATASET_INFO):
      tf.io.gfile.rename(os.path.join(scratch, name), os.path.join(output_dir, name),
                         overwrite=True)
  finally:
    tf.io.gfile.rmtree(scratch)
  return True
