"""Cityscapes: `leftImg8bit/{split}/<city>/<stem>_leftImg8bit.png` +
`gtFine/{split}/<city>/<stem>_gtFine_labelIds.png`.

Label ids map to train ids (cityscapesScripts). The other gtFine files (color, instanceIds,
polygons) are not read. The `test` split's labels are placeholders, so it is written unlabelled.
"""

import os

import numpy as np

from tfdaseg.data import labels
from tfdaseg.data.converters import base
from tfdaseg.data.converters.registry import CONVERTERS

_IMAGE_EXTS = (".png", ".jpg")


class CityscapesLayoutConverter(base.Converter):
  """Any dataset in Cityscapes' folder layout (Cityscapes, IDD).

  Subclasses set `label_suffix` (what replaces `_leftImg8bit.png` in a label's name) and
  `table` (label value -> storage id, for `base.apply_table`).
  """

  image_suffix = "_leftImg8bit"
  label_suffix = "_gtFine_labelIds.png"
  table = base.id_table(labels.CITYSCAPES_ID_TO_TRAIN_ID, 256)
  unlabelled_splits = ("test",)

  def list_pairs(self, split: str) -> list[base.SourcePair]:
    layout = f"leftImg8bit/{split}/<city>/<stem>{self.image_suffix}.png"
    image_root = self.require_dir("leftImg8bit", split, layout=layout)
    label_root = None
    if self.labelled(split):
      label_root = self.require_dir(
          "gtFine", split, layout=f"gtFine/{split}/<city>/<stem>{self.label_suffix}")
    selected = self.selected_stems()
    pairs = []
    for city in sorted(os.listdir(image_root)):
      if not os.path.isdir(os.path.join(image_root, city)):
        continue
      for name in sorted(os.listdir(os.path.join(image_root, city))):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in _IMAGE_EXTS or not stem.endswith(self.image_suffix):
          continue
        if selected is not None and stem not in selected:
          continue
        image = os.path.join(image_root, city, name)
        label = None
        if label_root is not None:
          label = os.path.join(label_root, city, stem[:-len(self.image_suffix)] + self.label_suffix)
        pairs.append(base.SourcePair(os.path.relpath(image, self.data_dir), image, label))
    if not pairs:
      raise FileNotFoundError(f"{image_root}: no images; expected {layout}")
    return pairs

  def read_label(self, label: str | bytes) -> np.ndarray:
    return base.apply_table(base.read_index_image(label), self.table, label)


@CONVERTERS.register("cityscapes")
class CityscapesConverter(CityscapesLayoutConverter):
  """Converts Cityscapes (gtFine label ids) into the cityscapes19 storage space."""
