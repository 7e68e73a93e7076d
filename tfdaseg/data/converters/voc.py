"""PASCAL VOC 2012 segmentation, optionally with SBD's extra masks (the `trainaug` split).

VOC: `JPEGImages/<id>.jpg`, `SegmentationClass/<id>.png` (palette indices 0..20, 255 void) and
`ImageSets/Segmentation/{split}.txt`. SBD (Hariharan et al., 2011; `--sbd_dir`): `cls/<id>.mat`
with struct `GTcls`, field `Segmentation`, and `train.txt` / `val.txt`. `trainaug` is the
standard 10,582-image list: SBD train + SBD val + VOC train, minus VOC val; images with a VOC
mask use it (it marks object boundaries void), the rest their SBD mask. JPEGs are stored as is.
"""

import io
import os

import numpy as np
import scipy.io

from tfdaseg.data import labels
from tfdaseg.data.converters import base
from tfdaseg.data.converters.registry import CONVERTERS

_LAYOUT = "JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/{split}.txt"
_NUM_CLASSES = len(labels.VOC_CLASSES)
# Values 0..20 are classes and 255 is void; anything in between is not a VOC label.
_TABLE = base.id_table({**{i: i for i in range(_NUM_CLASSES)}, labels.IGNORE_ID: labels.IGNORE_ID},
                       256, unused=-1)
TRAINAUG = "trainaug"


def _read_ids(path: str) -> list[str]:
  try:
    with open(path) as f:
      return [line.strip() for line in f if line.strip()]
  except OSError as e:
    raise FileNotFoundError(f"{path}: cannot read image list ({e.strerror or e})") from None


@CONVERTERS.register("voc")
class VocConverter(base.Converter):
  """Converts PASCAL VOC 2012 (and SBD for `trainaug`) into the voc21 storage space."""

  storage = "voc21"
  unlabelled_splits = ("test",)
  class_labels = True

  def list_pairs(self, split: str) -> list[base.SourcePair]:
    image_dir = self.require_dir("JPEGImages", layout=_LAYOUT)
    lists = self.require_dir("ImageSets", "Segmentation", layout=_LAYOUT)
    labelled = self.labelled(split)
    mask_dir = self.require_dir("SegmentationClass", layout=_LAYOUT) if labelled else None
    if split == TRAINAUG:
      ids, sbd_ids = self._trainaug_ids(lists)
    else:
      ids, sbd_ids = _read_ids(os.path.join(lists, f"{split}.txt")), set()
    selected = self.selected_stems()
    pairs = []
    for image_id in ids:
      if selected is not None and image_id not in selected:
        continue
      image = os.path.join(image_dir, f"{image_id}.jpg")
      if image_id in sbd_ids and not os.path.exists(image):
        image = os.path.join(self.options.sbd_dir, "img", f"{image_id}.jpg")
      label = None
      if labelled:
        label = (os.path.join(self.options.sbd_dir, "cls", f"{image_id}.mat")
                 if image_id in sbd_ids else os.path.join(mask_dir, f"{image_id}.png"))
      pairs.append(base.SourcePair(os.path.relpath(image, self.data_dir), image, label))
    return pairs

  def _trainaug_ids(self, lists: str) -> tuple[list[str], set[str]]:
    """Returns the trainaug ids and the subset that takes its mask from SBD."""
    if self.options.sbd_dir is None:
      raise ValueError(f"split {TRAINAUG!r} needs --sbd_dir (the SBD release with cls/, "
                       "train.txt and val.txt)")
    sbd = set()
    for name in ("train.txt", "val.txt"):
      sbd.update(_read_ids(os.path.join(self.options.sbd_dir, name)))
    voc_train = set(_read_ids(os.path.join(lists, "train.txt")))
    voc_val = set(_read_ids(os.path.join(lists, "val.txt")))
    ids = sorted((sbd | voc_train) - voc_val)
    return ids, {i for i in ids if i not in voc_train}

  def read_label(self, label: str | bytes) -> np.ndarray:
    if isinstance(label, str) and label.endswith(".mat"):
      raw = _read_sbd_mask(label)
    else:
      raw = base.read_index_image(label)
    return base.apply_table(raw, _TABLE, label)


def _read_sbd_mask(path: str) -> np.ndarray:
  """Reads `GTcls.Segmentation` from an SBD `cls/<id>.mat` file."""
  try:
    mat = scipy.io.loadmat(io.BytesIO(base.read_bytes(path)))
    mask = mat["GTcls"]["Segmentation"][0, 0]
  except base.BadFileError:
    raise
  except Exception as e:  # scipy raises several types for corrupt or unexpected files.
    raise base.BadFileError(path, f"not an SBD cls file with GTcls.Segmentation ({e!r})") from None
  if mask.ndim != 2:
    raise base.BadFileError(path, f"GTcls.Segmentation has shape {mask.shape}, expected [H, W]")
  return mask
