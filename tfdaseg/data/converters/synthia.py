"""SYNTHIA-RAND-CITYSCAPES: `RGB/NNNNNNN.png` + `GT/LABELS/NNNNNNN.png`.

Labels are 16-bit multi-channel PNGs: the class id is the first channel (R, as the reference
loaders read it with imageio), the instance id the second. Class ids map to Cityscapes train
ids. The dataset has no official splits: `train` is every pair, or the `--list_file` subset.
"""

import cv2
import numpy as np

from tfdaseg.data import labels
from tfdaseg.data.converters import base
from tfdaseg.data.converters.registry import CONVERTERS

_LAYOUT = "RGB/NNNNNNN.png and GT/LABELS/NNNNNNN.png"
# SYNTHIA's README lists 23 classes, ids 0 (void) .. 22 (lanemarking); larger values mean the
# wrong channel or a corrupt file.
_NUM_SYNTHIA_IDS = 23
_TABLE = base.id_table(labels.SYNTHIA_ID_TO_TRAIN_ID, _NUM_SYNTHIA_IDS)
# OpenCV returns channels in BGR(A) order, so the first (R) channel is index 2.
_CLASS_CHANNEL = 2


@CONVERTERS.register("synthia")
class SynthiaConverter(base.Converter):
  """Converts SYNTHIA-RAND-CITYSCAPES into the cityscapes19 storage space."""

  def list_pairs(self, split: str) -> list[base.SourcePair]:
    if split != "train" and self.options.list_file is None:
      raise ValueError(f"SYNTHIA has no split {split!r}: use 'train' (all images) or select "
                       "images with --list_file")
    images = self.require_dir("RGB", layout=_LAYOUT)
    label_dir = self.require_dir("GT", "LABELS", layout=_LAYOUT) if self.labelled(split) else None
    return self.pairs_by_stem(images, label_dir)

  def read_label(self, label: str | bytes) -> np.ndarray:
    encoded = np.frombuffer(base.read_bytes(label), dtype=np.uint8)
    raw = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
    if raw is None:
      raise base.BadFileError(base.source_name(label), "cannot decode label PNG")
    if raw.ndim == 3:
      if raw.shape[2] < 3:
        raise base.BadFileError(base.source_name(label),
                                f"expected 3 or 4 channels, got shape {raw.shape}")
      raw = raw[:, :, _CLASS_CHANNEL]
    return base.apply_table(raw, _TABLE, label)
