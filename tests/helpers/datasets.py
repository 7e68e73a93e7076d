"""Miniature datasets in each real on-disk format, and readers of converted TFRecords.

Every writer returns a `MiniDataset` whose `expected` labels are computed here, from the raw
ids written, with plain dict look-ups of the label tables: independently of the converters'
own table code, so that a test comparing the two can fail.
"""

import dataclasses
import glob
import io
import json
import os

import cv2
import numpy as np
from PIL import Image
import scipy.io
import scipy.sparse

from tfdaseg.data import labels
from tfdaseg.data import schema

SIZES = ((32, 24), (40, 30), (48, 32))  # (width, height) of the miniature images.


@dataclasses.dataclass
class MiniDataset:
  """A written miniature dataset.

  Args:
    root: Its root folder (the converter's `--data_dir`).
    split: The split written.
    image_files: Recorded filename (relative to root) -> absolute path of the image file.
    expected: Recorded filename -> expected storage ids uint8 [H, W], or None if unlabelled.
  """

  root: str
  split: str
  image_files: dict[str, str]
  expected: dict[str, np.ndarray | None]


def expected_ids(raw: np.ndarray, mapping: dict, unmapped: int = labels.IGNORE_ID) -> np.ndarray:
  """Maps raw ids one pixel at a time with `mapping.get` (deliberately not vectorised)."""
  out = np.empty(raw.shape, np.uint8)
  for index, value in np.ndenumerate(raw):
    out[index] = mapping.get(int(value), unmapped)
  return out


def random_image(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
  """A random RGB uint8 image [H, W, 3] of size (width, height)."""
  return rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def smooth_noisy_image(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
  """A photo-like RGB uint8 image [H, W, 3] of size (width, height).

  Smooth waves (what any filter keeps), 16-pixel blocks of random colour (edges, where a
  cubic kernel overshoots) and Gaussian noise (detail above the new Nyquist rate, which an
  unfiltered downscale aliases).
  """
  width, height = size
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
  waves = 128 + 60 * np.sin(xx / 37.0) * np.cos(yy / 23.0)
  blocks = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3)).astype(np.float32)
  blocks = np.kron(blocks, np.ones((16, 16, 1), np.float32))[:height, :width]
  image = 0.5 * waves[..., None] + 0.5 * blocks + rng.normal(0, 20, (height, width, 3))
  return np.clip(np.round(image), 0, 255).astype(np.uint8)


def random_ids(rng: np.random.Generator, size: tuple[int, int], values) -> np.ndarray:
  """A label image [H, W] of ids drawn from `values`, in 4x4 blocks like real regions."""
  blocks = rng.choice(np.asarray(values), ((size[1] + 3) // 4, (size[0] + 3) // 4))
  return np.kron(blocks, np.ones((4, 4), blocks.dtype))[: size[1], : size[0]]


def save_png(path: str, array: np.ndarray, palette: list[int] | None = None) -> None:
  """Saves uint8 [H, W] (grey, or palette indices when `palette` is given) or [H, W, 3] RGB."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if palette is None:
    Image.fromarray(array).save(path)
    return
  image = Image.frombytes("P", (array.shape[1], array.shape[0]), array.astype(np.uint8).tobytes())
  image.putpalette(palette)
  image.save(path)


def _palette(rng: np.random.Generator) -> list[int]:
  """A random 256-colour palette: decoding colours instead of indices would be visibly wrong."""
  return rng.integers(0, 256, 768).tolist()


def _rel(root: str, path: str) -> str:
  return os.path.relpath(path, root)


def write_gta5(root: str, seed: int = 0, sizes=SIZES) -> MiniDataset:
  """GTA5: images/NNNNN.png, labels/NNNNN.png palette PNGs with Cityscapes label ids as indices.

  One frame per (width, height) of `sizes`, numbered from 1 like the release's frames.
  """
  rng = np.random.default_rng(seed)
  files, expected = {}, {}
  for i, size in enumerate(sizes, start=1):
    image_path = os.path.join(root, "images", f"{i:05d}.png")
    save_png(image_path, random_image(rng, size))
    raw = random_ids(rng, size, list(range(34)) + [255]).astype(np.uint8)
    save_png(os.path.join(root, "labels", f"{i:05d}.png"), raw, palette=_palette(rng))
    files[_rel(root, image_path)] = image_path
    expected[_rel(root, image_path)] = expected_ids(raw, labels.CITYSCAPES_ID_TO_TRAIN_ID)
  return MiniDataset(root, "train", files, expected)


def write_synthia_label(path: str, class_ids: np.ndarray, instance_ids: np.ndarray) -> None:
  """Writes a SYNTHIA GT/LABELS PNG: 16-bit RGB, class id in R, instance id in G, B = 7."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  rgb = np.stack([class_ids, instance_ids, np.full_like(class_ids, 7)], axis=-1).astype(np.uint16)
  cv2.imwrite(path, rgb[:, :, ::-1])  # OpenCV writes BGR order.


def write_synthia(root: str, seed: int = 0) -> MiniDataset:
  """SYNTHIA-RAND-CITYSCAPES: RGB/NNNNNNN.png + 16-bit GT/LABELS/NNNNNNN.png."""
  rng = np.random.default_rng(seed)
  files, expected = {}, {}
  for i, size in enumerate(SIZES[:2]):
    image_path = os.path.join(root, "RGB", f"{i:07d}.png")
    save_png(image_path, random_image(rng, size))
    classes = random_ids(rng, size, range(23))
    # Instance ids above 255: a reader taking the wrong channel sees out-of-range ids.
    instances = random_ids(rng, size, range(300, 5000))
    write_synthia_label(os.path.join(root, "GT", "LABELS", f"{i:07d}.png"), classes, instances)
    files[_rel(root, image_path)] = image_path
    expected[_rel(root, image_path)] = expected_ids(classes, labels.SYNTHIA_ID_TO_TRAIN_ID)
  return MiniDataset(root, "train", files, expected)


def _write_cityscapes_like(root: str, split: str, label_suffix: str, mapping: dict, raw_values,
                           folders: dict[str, int], seed: int, labelled: bool) -> MiniDataset:
  rng = np.random.default_rng(seed)
  files, expected = {}, {}
  sizes = iter(SIZES * 3)
  for folder, count in folders.items():
    for frame in range(count):
      stem = f"{folder}_{frame:06d}_{19 + frame:06d}"
      size = next(sizes)
      image_path = os.path.join(root, "leftImg8bit", split, folder, f"{stem}_leftImg8bit.png")
      save_png(image_path, random_image(rng, size))
      gt = os.path.join(root, "gtFine", split, folder, stem)
      raw = random_ids(rng, size, raw_values).astype(np.uint8)
      if not labelled:
        raw = np.zeros_like(raw)  # The test split ships placeholder labels.
      save_png(f"{gt}{label_suffix}", raw)
      # The other gtFine files a release holds; converters must not pick them up.
      save_png(f"{gt}_gtFine_color.png", random_image(rng, size))
      cv2.imwrite(f"{gt}_gtFine_instanceIds.png", raw.astype(np.uint16) * 1000)
      with open(f"{gt}_gtFine_polygons.json", "w") as f:
        json.dump({"imgHeight": size[1], "imgWidth": size[0], "objects": []}, f)
      files[_rel(root, image_path)] = image_path
      expected[_rel(root, image_path)] = expected_ids(raw, mapping) if labelled else None
  return MiniDataset(root, split, files, expected)


def write_cityscapes(root: str, split: str = "train", seed: int = 0) -> MiniDataset:
  """Cityscapes: leftImg8bit/{split}/<city>/..., gtFine/{split}/<city>/... with all gtFine files.

  The `test` split gets placeholder labels and is expected unlabelled.
  """
  return _write_cityscapes_like(
      root, split, "_gtFine_labelIds.png", labels.CITYSCAPES_ID_TO_TRAIN_ID, range(34),
      {"aachen": 2, "bremen": 1}, seed, labelled=split != "test")


def write_idd(root: str, split: str = "train", seed: int = 0) -> MiniDataset:
  """IDD: Cityscapes layout with numbered sequence folders and `_gtFine_labellevel3Ids.png`."""
  return _write_cityscapes_like(
      root, split, "_gtFine_labellevel3Ids.png", labels.IDD_LEVEL3_TO_TRAIN_ID,
      list(range(27)) + [255], {"0": 1, "12": 2}, seed, labelled=True)


def write_camvid(root: str, split: str = "train", seed: int = 0,
                 colour_labels: bool = False) -> MiniDataset:
  """CamVid SegNet layout: {split}/ and {split}annot/ with values 0..11 (11 = unlabelled).

  With `colour_labels`, annotations are original-release RGB colour images `<name>_L.png`.
  """
  rng = np.random.default_rng(seed)
  files, expected = {}, {}
  colours = list(labels.CAMVID32_COLOUR_TO_CLASS) + [(0, 0, 0)]
  for i, size in enumerate(SIZES[:2]):
    name = f"0001TP_{i:06d}.png"
    image_path = os.path.join(root, split, name)
    save_png(image_path, random_image(rng, size))
    if colour_labels:
      picks = random_ids(rng, size, range(len(colours)))
      rgb = np.asarray(colours, np.uint8)[picks]
      save_png(os.path.join(root, f"{split}annot", name.replace(".png", "_L.png")), rgb)
      colour_of = {j: colours[j] for j in range(len(colours))}
      mapping = {j: labels.CAMVID32_COLOUR_TO_CLASS.get(colour_of[j], labels.IGNORE_ID)
                 for j in colour_of}
      expected[_rel(root, image_path)] = expected_ids(picks, mapping)
    else:
      raw = random_ids(rng, size, range(12)).astype(np.uint8)
      save_png(os.path.join(root, f"{split}annot", name), raw)
      expected[_rel(root, image_path)] = expected_ids(raw, {c: c for c in range(11)})
    files[_rel(root, image_path)] = image_path
  return MiniDataset(root, split, files, expected)


VOC_TRAIN = ("2007_000032", "2007_000039")
VOC_VAL = ("2007_000033",)
SBD_TRAIN = ("2007_000039", "2008_000002")  # overlaps VOC train
SBD_VAL = ("2007_000033", "2008_000003")  # overlaps VOC val, which trainaug excludes


def _voc_raw(rng: np.random.Generator, size: tuple[int, int], void: bool) -> np.ndarray:
  return random_ids(rng, size, list(range(21)) + ([255] if void else [])).astype(np.uint8)


def write_voc(root: str, sbd_root: str | None = None, seed: int = 0) -> dict[str, MiniDataset]:
  """PASCAL VOC 2012 (JPEGImages, palette SegmentationClass, ImageSets) and optionally SBD.

  SBD masks are `cls/<id>.mat` files holding the struct GTcls (Segmentation, Boundaries as a
  cell array of sparse matrices, CategoriesPresent), as the SBD release stores them.

  Returns:
    {"train": ..., "val": ...} and, with `sbd_root`, "trainaug": the expected 10,582-style list.
  """
  rng = np.random.default_rng(seed)
  ids = sorted(set(VOC_TRAIN + VOC_VAL + (SBD_TRAIN + SBD_VAL if sbd_root else ())))
  voc_masks, sbd_masks, files = {}, {}, {}
  for i, image_id in enumerate(ids):
    size = SIZES[i % len(SIZES)]
    path = os.path.join(root, "JPEGImages", f"{image_id}.jpg")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(random_image(rng, size)).save(path, quality=90)
    files[_rel(root, path)] = path
    if image_id in VOC_TRAIN + VOC_VAL:
      voc_masks[image_id] = _voc_raw(rng, size, void=True)
      save_png(os.path.join(root, "SegmentationClass", f"{image_id}.png"), voc_masks[image_id],
               palette=[c for colour in labels.voc_palette() for c in colour])
    if sbd_root and image_id in SBD_TRAIN + SBD_VAL:
      sbd_masks[image_id] = _voc_raw(rng, size, void=False)
      write_sbd_mat(os.path.join(sbd_root, "cls", f"{image_id}.mat"), sbd_masks[image_id])
  lists = os.path.join(root, "ImageSets", "Segmentation")
  os.makedirs(lists, exist_ok=True)
  _write_list(os.path.join(lists, "train.txt"), VOC_TRAIN)
  _write_list(os.path.join(lists, "val.txt"), VOC_VAL)
  identity = {c: c for c in range(21)} | {255: 255}

  def dataset(split: str, split_ids, masks) -> MiniDataset:
    names = {i: f"JPEGImages/{i}.jpg" for i in split_ids}
    return MiniDataset(root, split, {names[i]: files[names[i]] for i in split_ids},
                       {names[i]: expected_ids(masks[i], identity) for i in split_ids})

  result = {"train": dataset("train", VOC_TRAIN, voc_masks),
            "val": dataset("val", VOC_VAL, voc_masks)}
  if sbd_root:
    _write_list(os.path.join(sbd_root, "train.txt"), SBD_TRAIN)
    _write_list(os.path.join(sbd_root, "val.txt"), SBD_VAL)
    trainaug = sorted((set(SBD_TRAIN) | set(SBD_VAL) | set(VOC_TRAIN)) - set(VOC_VAL))
    masks = {i: voc_masks[i] if i in VOC_TRAIN else sbd_masks[i] for i in trainaug}
    result["trainaug"] = dataset("trainaug", trainaug, masks)
  return result


def write_sbd_mat(path: str, segmentation: np.ndarray) -> None:
  """Writes an SBD `cls/<id>.mat` file in the release's struct layout."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  boundaries = np.empty((20, 1), dtype=object)
  for c in range(20):
    boundaries[c, 0] = scipy.sparse.csc_matrix(segmentation == c + 1, dtype=np.float64)
  present = np.unique(segmentation[(segmentation > 0) & (segmentation < 255)])
  scipy.io.savemat(path, {"GTcls": {
      "Segmentation": segmentation.astype(np.uint8),
      "Boundaries": boundaries,
      "CategoriesPresent": present.reshape(-1, 1).astype(np.uint8),
  }})


def _write_list(path: str, ids) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write("".join(f"{i}\n" for i in ids))


def write_folder(root: str, seed: int = 0) -> tuple[MiniDataset, str]:
  """Parallel images/ and labels/ folders (16-bit labels) plus a `--label_map` JSON.

  Returns:
    (the dataset, the label map path).
  """
  rng = np.random.default_rng(seed)
  mapping = {1000: 0, 2000: 13, 3000: 255, 7: 10}
  label_map = os.path.join(root, "label_map.json")
  os.makedirs(root, exist_ok=True)
  with open(label_map, "w") as f:
    json.dump({"storage": "cityscapes19", "map": {str(k): v for k, v in mapping.items()}}, f)
  files, expected = {}, {}
  for i, size in enumerate(SIZES[:2]):
    image_path = os.path.join(root, "images", f"frame{i}.png")
    save_png(image_path, random_image(rng, size))
    raw = random_ids(rng, size, [1000, 2000, 3000, 7, 5, 60000]).astype(np.uint16)
    os.makedirs(os.path.join(root, "labels"), exist_ok=True)
    cv2.imwrite(os.path.join(root, "labels", f"frame{i}.png"), raw)
    files[_rel(root, image_path)] = image_path
    expected[_rel(root, image_path)] = expected_ids(raw, mapping)
  return MiniDataset(root, "train", files, expected), label_map


def read_records(pattern: str) -> dict[str, dict]:
  """Reads converted shards into {filename: decode_example output as numpy, plus "raw"}.

  "raw" holds the undecoded `image/encoded` bytes and "format" the `image/format` value.
  """
  import tensorflow as tf

  out = {}
  for path in sorted(glob.glob(pattern)):
    for serialized in tf.data.TFRecordDataset(path):
      decoded = {k: v.numpy() for k, v in schema.decode_example(serialized).items()}
      example = tf.train.Example.FromString(serialized.numpy())
      feature = example.features.feature
      decoded["raw"] = feature[schema.IMAGE_ENCODED].bytes_list.value[0]
      decoded["format"] = feature[schema.IMAGE_FORMAT].bytes_list.value[0].decode()
      decoded["has_label_key"] = schema.LABEL_ENCODED in feature
      out[decoded["filename"].decode()] = decoded
  return out


def png_bytes(array: np.ndarray) -> bytes:
  """Encodes an array as PNG bytes (for in-memory sources)."""
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()
