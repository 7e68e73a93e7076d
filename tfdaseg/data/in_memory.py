"""Writes arrays held in memory (synthetic data, demos, tests) as a converted split.

Goes through the same writer as the dataset converters, so the result (shards, manifest,
TFDS metadata) is what `make_dataset` reads from real data.
"""

from typing import Sequence

import numpy as np

from tfdaseg.data import labels as labels_lib
from tfdaseg.data.converters import base
from tfdaseg.data.record_encoder import encode_png
from tfdaseg.data.tfrecord_writer import WriteOptions, write_split


class ArrayConverter(base.Converter):
  """Serves pairs whose image and label are PNG bytes of arrays (labels already storage ids).

  Args:
    pairs: The pairs, in order.
    storage: Their storage space.
  """

  def __init__(self, pairs: Sequence[base.SourcePair], storage: str = "cityscapes19"):
    super().__init__("<memory>")
    if storage not in labels_lib.STORAGE_CLASSES:
      raise ValueError(f"unknown storage space {storage!r}; known: "
                       f"{', '.join(labels_lib.STORAGE_CLASSES)}")
    self.storage = storage
    self._pairs = list(pairs)

  def list_pairs(self, split: str) -> list[base.SourcePair]:
    return self._pairs

  def read_label(self, label: str | bytes) -> np.ndarray:
    return base.read_index_image(label).astype(np.uint8)


def write_arrays(output_dir: str, dataset: str, split: str, images: Sequence[np.ndarray],
                 label_maps: Sequence[np.ndarray] | None = None, *,
                 storage: str = "cityscapes19", filenames: Sequence[str] | None = None,
                 num_shards: int = 1) -> dict:
  """Writes RGB images (and storage-id labels) as `{dataset}-{split}` shards, replacing any.

  Like every conversion, the pairs are stored in the writer's seeded random order (its
  default `WriteOptions.shuffle_seed`), not in the order given.

  Args:
    output_dir: Destination folder.
    dataset: Dataset name for the file names.
    split: Split name for the file names.
    images: uint8 [H, W, 3] RGB arrays.
    label_maps: uint8 [H, W] storage ids (255 ignore) per image, or None for unlabelled.
    storage: The labels' storage space.
    filenames: Names recorded per image (default "{split}/{index:06d}.png").
    num_shards: Number of shards.

  Returns:
    The manifest.
  """
  if label_maps is not None and len(label_maps) != len(images):
    raise ValueError(f"{len(images)} images but {len(label_maps)} labels")
  names = filenames or [f"{split}/{i:06d}.png" for i in range(len(images))]
  pairs = []
  for i, image in enumerate(images):
    label = None if label_maps is None else encode_png(np.asarray(label_maps[i], np.uint8))
    pairs.append(base.SourcePair(names[i], encode_png(np.asarray(image, np.uint8)), label))
  return write_split(ArrayConverter(pairs, storage), dataset, split, output_dir,
                     WriteOptions(num_shards=num_shards, num_workers=0, overwrite=True))
