"""Any dataset as two parallel folders, `images/` and `labels/`, matched by file stem.

`--label_map` names a JSON file `{"storage": "cityscapes19", "map": {"<raw id>": <storage id>}}`;
raw ids missing from the map are ignored (255). Labels are single-channel 8- or 16-bit PNGs.
"""

import numpy as np

from tfdaseg.data import labels
from tfdaseg.data.converters import base
from tfdaseg.data.converters.registry import CONVERTERS
from tfdaseg.utils.files import read_json

_LAYOUT = "images/<name>.{png,jpg} and labels/<name>.png"
_IMAGE_EXTS = (".png", ".jpg", ".jpeg")
_RAW_ID_RANGE = 1 << 16  # 16-bit PNGs


def load_label_map(path: str) -> tuple[str, np.ndarray]:
  """Reads and checks a `--label_map` file.

  Returns:
    (storage space, table for `base.apply_table`).

  Raises:
    ValueError: naming the file and the problem.
  """
  spec = read_json(path)
  if not isinstance(spec, dict) or set(spec) != {"storage", "map"}:
    raise ValueError(f"{path}: expected an object with keys 'storage' and 'map'")
  storage = spec["storage"]
  if storage not in labels.STORAGE_CLASSES:
    raise ValueError(f"{path}: unknown storage {storage!r}; known: "
                     f"{', '.join(labels.STORAGE_CLASSES)}")
  num_classes = len(labels.STORAGE_CLASSES[storage])
  mapping = {}
  for raw, target in spec["map"].items():
    try:
      raw_id = int(raw)
    except ValueError:
      raise ValueError(f"{path}: raw id {raw!r} is not an integer") from None
    if not 0 <= raw_id < _RAW_ID_RANGE:
      raise ValueError(f"{path}: raw id {raw_id} is outside 0..{_RAW_ID_RANGE - 1}")
    if not (isinstance(target, int) and (0 <= target < num_classes or target == labels.IGNORE_ID)):
      raise ValueError(f"{path}: raw id {raw_id} maps to {target!r}, not a {storage} id "
                       f"(0..{num_classes - 1} or {labels.IGNORE_ID})")
    mapping[raw_id] = target
  return storage, base.id_table(mapping, _RAW_ID_RANGE)


@CONVERTERS.register("folder")
class FolderConverter(base.Converter):
  """Converts `images/` + `labels/` with a JSON id map into the map's storage space."""

  def __init__(self, data_dir: str, options: base.ConverterOptions = base.ConverterOptions()):
    super().__init__(data_dir, options)
    if options.label_map is None:
      raise ValueError("the folder dataset needs --label_map (a JSON file "
                       '{"storage": "cityscapes19", "map": {"<raw id>": <storage id>}})')
    self.storage, self._table = load_label_map(options.label_map)

  def list_pairs(self, split: str) -> list[base.SourcePair]:
    images = self.require_dir("images", layout=_LAYOUT)
    label_dir = self.require_dir("labels", layout=_LAYOUT) if self.labelled(split) else None
    return self.pairs_by_stem(images, label_dir, image_exts=_IMAGE_EXTS)

  def read_label(self, label: str | bytes) -> np.ndarray:
    return base.apply_table(base.read_index_image(label), self._table, label)
