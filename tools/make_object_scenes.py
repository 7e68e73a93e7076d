"""Writes generated object scenes in the PASCAL VOC 2012 layout: a small stand-in for VOC.

  python tools/make_object_scenes.py --output_dir=scenes_voc [--num_train=400] [--num_val=100]
      [--size=96x96] [--num_classes=6] [--seed=0]

Every image shows 1-3 objects on a textured background; object class c (VOC ids 1..num_classes)
has its own shape and colour family, so both its pixels and its presence can be learnt.
Written as VOC is: JPEGImages/<id>.jpg, SegmentationClass/<id>.png (palette PNG of class ids,
object outlines void 255 like VOC's) and ImageSets/Segmentation/{train,val}.txt; convert with
`tfdaseg-convert --dataset=voc`, which also stores each image's image-level labels. Every image
is a function of (--seed, its index).
"""

import os

import cv2
import numpy as np
from absl import app, flags
from PIL import Image

from tfdaseg.data import labels
from tfdaseg.utils.cli import run_app

FLAGS = flags.FlagValues()
flags.DEFINE_string("output_dir", None, "Folder of the VOC-layout scenes.", flag_values=FLAGS)
flags.DEFINE_integer("num_train", 400, "Training scenes.", flag_values=FLAGS)
flags.DEFINE_integer("num_val", 100, "Validation scenes.", flag_values=FLAGS)
flags.DEFINE_string("size", "96x96", "Scene size WIDTHxHEIGHT.", flag_values=FLAGS)
flags.DEFINE_integer("num_classes", 6, "Object classes (VOC ids 1..N), at most 6.", lower_bound=1,
                     upper_bound=6, flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Scene seed.", flag_values=FLAGS)
flags.mark_flags_as_required(["output_dir"], flag_values=FLAGS)

# Per class: a shape and a base hue (OpenCV's 0..179 hue scale).
_SHAPES = ("disc", "square", "triangle", "bar", "cross", "ring")
_HUES = (0, 30, 60, 90, 120, 150)
_VOID = labels.IGNORE_ID


def _polygon(shape: str, centre: np.ndarray, radius: float, angle: float) -> list[np.ndarray]:
  corners = {"square": 4, "triangle": 3}[shape]
  turns = angle + np.arange(corners) * 2 * np.pi / corners
  return [np.stack([centre[0] + radius * np.cos(turns), centre[1] + radius * np.sin(turns)],
                   axis=1).round().astype(np.int32)]


def _draw_mask(shape: str, mask: np.ndarray, centre: np.ndarray, radius: float,
               angle: float) -> None:
  point = tuple(int(v) for v in centre)
  r = int(radius)
  if shape == "disc":
    cv2.circle(mask, point, r, 1, -1)
  elif shape == "ring":
    cv2.circle(mask, point, r, 1, max(2, r // 3))
  elif shape in ("square", "triangle"):
    cv2.fillPoly(mask, _polygon(shape, centre, radius, angle), 1)
  else:  # bar, cross: rotated rectangles
    arms = (0.0,) if shape == "bar" else (0.0, np.pi / 2)
    for arm in arms:
      box = cv2.boxPoints((point, (2 * r, max(3, r // 2)), np.degrees(angle + arm)))
      cv2.fillPoly(mask, [box.round().astype(np.int32)], 1)


def draw_scene(rng: np.random.Generator, width: int, height: int,
               num_classes: int) -> tuple[np.ndarray, np.ndarray]:
  """One scene: (uint8 RGB [H, W, 3], uint8 class ids [H, W] with void outlines)."""
  grey = rng.uniform(60, 190)
  image = np.clip(grey + rng.normal(0, 25, (height // 8 + 1, width // 8 + 1, 1)), 0, 255)
  image = cv2.resize(image.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
  image = np.repeat(image[..., None], 3, axis=2) + rng.normal(0, 6, (height, width, 3))
  label = np.zeros((height, width), np.uint8)
  for _ in range(rng.integers(1, 4)):
    cls = int(rng.integers(1, num_classes + 1))
    mask = np.zeros((height, width), np.uint8)
    radius = rng.uniform(0.12, 0.25) * min(width, height)
    centre = rng.uniform([radius, radius], [width - radius, height - radius])
    _draw_mask(_SHAPES[cls - 1], mask, centre, radius, rng.uniform(0, np.pi))
    hsv = np.uint8([[[(_HUES[cls - 1] + rng.integers(-8, 9)) % 180, rng.integers(150, 256),
                      rng.integers(120, 256)]]])
    colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)
    shade = colour + rng.normal(0, 12, (height, width, 3))
    image = np.where(mask[..., None] > 0, shade, image)
    label = np.where(mask > 0, cls, label).astype(np.uint8)
  edges = cv2.morphologyEx(label, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
  label[edges] = _VOID
  return np.clip(image, 0, 255).astype(np.uint8), label


def write_scenes(output_dir: str, num_train: int, num_val: int, width: int, height: int,
                 num_classes: int, seed: int) -> dict[str, list[str]]:
  """Writes the scenes; returns {split: image ids}."""
  for folder in ("JPEGImages", "SegmentationClass", os.path.join("ImageSets", "Segmentation")):
    os.makedirs(os.path.join(output_dir, folder), exist_ok=True)
  palette = [c for colour in labels.voc_palette() for c in colour]
  splits = {"train": [f"scene_{i:05d}" for i in range(num_train)],
            "val": [f"scene_{i:05d}" for i in range(num_train, num_train + num_val)]}
  for split, ids in splits.items():
    for image_id in ids:
      rng = np.random.default_rng([seed, int(image_id.split("_")[1])])
      image, label = draw_scene(rng, width, height, num_classes)
      Image.fromarray(image).save(os.path.join(output_dir, "JPEGImages", f"{image_id}.jpg"),
                                  quality=95)
      mask = Image.fromarray(label, mode="P")
      mask.putpalette(palette)
      mask.save(os.path.join(output_dir, "SegmentationClass", f"{image_id}.png"))
    with open(os.path.join(output_dir, "ImageSets", "Segmentation", f"{split}.txt"), "w") as f:
      f.write("".join(f"{i}\n" for i in ids))
  return splits


def main(argv: list[str]) -> None:
  """Writes the scenes the flags describe."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    width, height = (int(v) for v in FLAGS.size.lower().split("x"))
  except ValueError:
    raise app.UsageError(f"--size={FLAGS.size!r}: expected WIDTHxHEIGHT, e.g. 96x96") from None
  splits = write_scenes(FLAGS.output_dir, FLAGS.num_train, FLAGS.num_val, width, height,
                        FLAGS.num_classes, FLAGS.seed)
  print(f"{FLAGS.output_dir}: {len(splits['train'])} train, {len(splits['val'])} val scenes")


if __name__ == "__main__":
  run_app(main, FLAGS)
