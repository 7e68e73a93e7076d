"""GTA5 (Richter et al., 2016): `images/NNNNN.png` + `labels/NNNNN.png`.

Labels are palette PNGs whose palette INDICES are Cityscapes label ids (the colours only
visualise them), mapped here to Cityscapes train ids. The dataset has no official splits:
`train` is every pair, or the images named in `--list_file` (like the reference's
gta5_list/train.txt); any other split name needs a `--list_file`.
"""

import numpy as np

from tfdaseg.data import labels
from tfdaseg.data.converters import base
from tfdaseg.data.converters.registry import CONVERTERS

_LAYOUT = "images/NNNNN.png and labels/NNNNN.png"
# Palette indices are 8-bit, so every value is a legitimate label id; unknown ids -> ignore.
_TABLE = base.id_table(labels.CITYSCAPES_ID_TO_TRAIN_ID, 256)


@CONVERTERS.register("gta5")
class Gta5Converter(base.Converter):
  """Converts GTA5 into the cityscapes19 storage space."""

  def list_pairs(self, split: str) -> list[base.SourcePair]:
    if split != "train" and self.options.list_file is None:
      raise ValueError(f"GTA5 has no split {split!r}: use 'train' (all images) or select "
                       "images with --list_file")
    images = self.require_dir("images", layout=_LAYOUT)
    label_dir = self.require_dir("labels", layout=_LAYOUT) if self.labelled(split) else None
    return self.pairs_by_stem(images, label_dir)

  def read_label(self, label: str | bytes) -> np.ndarray:
    return base.apply_table(base.read_index_image(label), _TABLE, label)
