"""Cityscapes as prepared by TFDS's `cityscapes/semantic_segmentation` builder.

`--data_dir` is the TFDS data folder holding the prepared dataset (TFDS needs the manual
download to prepare it). Splits are TFDS's: `train`, `validation`, `test`. The stored PNG
bytes are copied as they are; `segmentation_label` holds raw Cityscapes label ids, mapped here
to train ids. `test` labels are placeholders, so that split is written unlabelled.
"""

import re

import numpy as np
import tensorflow as tf

from tfdaseg.data import labels
from tfdaseg.data.converters import base
from tfdaseg.data.converters.registry import CONVERTERS

BUILDER = "cityscapes/semantic_segmentation"
_TABLE = base.id_table(labels.CITYSCAPES_ID_TO_TRAIN_ID, 256)
# A pair's image and label name its record as "tfds:<split>:<index>" until `fetch` loads it.
_REF = re.compile(r"^tfds:(?P<split>[^:]+):(?P<index>\d+)$")


def _builder(data_dir: str):
  # Imported here: TFDS is slow to import and only this source needs it.
  import tensorflow_datasets as tfds

  return tfds.builder(BUILDER, data_dir=data_dir)


def _read(data_dir: str, split: str) -> tf.data.Dataset:
  import tensorflow_datasets as tfds

  skip = tfds.decode.SkipDecoding()
  try:
    return _builder(data_dir).as_dataset(
        split=split, shuffle_files=False,
        decoders={"image_left": skip, "segmentation_label": skip})
  except AssertionError as e:  # TFDS asserts that the dataset was prepared.
    raise FileNotFoundError(f"{data_dir}: no prepared TFDS {BUILDER} ({e})") from None


@CONVERTERS.register("tfds_cityscapes")
class TfdsCityscapesConverter(base.Converter):
  """Converts TFDS-prepared Cityscapes into the cityscapes19 storage space."""

  unlabelled_splits = ("test",)
  # `fetch` reads a run of the TFDS split at a time, so the writer must not permute the pairs.
  # Nor need it: TFDS stores prepared splits in a shuffled order (its writer orders examples
  # by a hash of their key), so the listing order is not name-sorted.
  random_access = False

  def list_pairs(self, split: str) -> list[base.SourcePair]:
    ids = _read(self.data_dir, split).map(lambda example: example["image_id"])
    selected = self.selected_stems()
    labelled = self.labelled(split)
    pairs = []
    for index, image_id in enumerate(ids.as_numpy_iterator()):
      name = image_id.decode()
      if selected is not None and name not in selected:
        continue
      ref = f"tfds:{split}:{index}"
      pairs.append(base.SourcePair(name, ref, ref if labelled else None))
    return pairs

  def fetch(self, pairs: list[base.SourcePair]) -> list[base.SourcePair]:
    """Loads the bytes of a run of pairs with one sliced read of the TFDS split."""
    refs = [_REF.match(p.image) for p in pairs]
    split = refs[0].group("split")
    indices = [int(r.group("index")) for r in refs]
    start, stop = min(indices), max(indices) + 1
    loaded = {}
    records = _read(self.data_dir, f"{split}[{start}:{stop}]").as_numpy_iterator()
    for index, record in zip(range(start, stop), records):
      loaded[index] = record
    fetched = []
    for pair, index in zip(pairs, indices):
      record = loaded.get(index)
      if record is None or record["image_id"].decode() != pair.filename:
        raise RuntimeError(f"TFDS {BUILDER} {split}[{index}] is not {pair.filename}: the "
                           "prepared data changed since the pairs were listed")
      label = record["segmentation_label"] if pair.label is not None else None
      fetched.append(base.SourcePair(pair.filename, record["image_left"], label))
    return fetched

  def read_label(self, label: str | bytes) -> np.ndarray:
    return base.apply_table(base.read_index_image(label), _TABLE, label)
