"""Writes the demo's two domains: procedural street scenes in the GTA5 and Cityscapes layouts.

  python tools/make_demo_data.py --output_dir=demo_data [--seed=0] [--num_source=2000] \
      [--num_target_train=2000] [--num_target_val=200] [--size=256x128] [--overwrite]

The "game" style (tfdaseg.data.synthetic_scenes) goes to <out>/gta5 as the real GTA5 release
lays it out: images/00001.png (RGB) and labels/00001.png (palette PNG whose indices are
Cityscapes label ids). The "real" style goes to <out>/cityscapes like Cityscapes:
leftImg8bit/{train,val}/<city>/<city>_<seq>_000019_leftImg8bit.png and
gtFine/{train,val}/<city>/<same stem>_gtFine_labelIds.png (8-bit grayscale label ids).

Every image is a pure function of (--seed, its stream, its index), so the output does not depend
on the number of workers. The tree is built in a hidden sibling folder that is renamed into place
once complete, holding a DONE.json stamp of the parameters: a re-run with the same parameters
reuses it, other parameters or --overwrite rebuild it, and an interrupted run leaves nothing
that a later run trusts.
"""

import dataclasses
import functools
import json
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import time
from typing import Callable

import cv2
import numpy as np
from absl import app, flags, logging
from PIL import Image
from tqdm import tqdm

from tfdaseg.data import synthetic_scenes
from tfdaseg.data.labels import CITYSCAPES_ID_TO_TRAIN_ID, CITYSCAPES_PALETTE
from tfdaseg.utils.cli import run_app

STAMP = "DONE.json"

# Cityscapes train and val come from different cities; its annotated frame of every 30-frame
# snippet is the 20th, hence frame number 19 in every file name.
TRAIN_CITIES = ("demoville", "synthburg")
VAL_CITIES = ("pixelstadt",)
_FRAME = 19

# Seed streams: every split draws its scenes independently of the others.
SOURCE, TARGET_TRAIN, TARGET_VAL = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class DemoParams:
  """What a demo data folder is a function of (recorded in its DONE.json).

  Args:
    seed: The dataset seed.
    num_source: Number of "game" scenes (GTA5 layout).
    num_target_train: Number of "real" training scenes (Cityscapes train, labels included).
    num_target_val: Number of "real" validation scenes (Cityscapes val).
    width: Image width in pixels.
    height: Image height in pixels.
  """

  seed: int = 0
  num_source: int = 2000
  num_target_train: int = 2000
  num_target_val: int = 200
  width: int = 256
  height: int = 128

  def stamp(self) -> dict:
    return {"scenes_version": synthetic_scenes.VERSION, **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class _Item:
  """One scene to draw and where its two files go (paths relative to the output folder)."""

  stream: int
  index: int
  style: str
  image_path: str
  label_path: str
  save_label: Callable[[np.ndarray, str], None]


def _label_id_palette() -> list[int]:
  """The GTA5 label palette: the Cityscapes colour of each label id, black for the rest."""
  palette = np.zeros((256, 3), np.uint8)
  for label_id, train_id in CITYSCAPES_ID_TO_TRAIN_ID.items():
    palette[label_id] = CITYSCAPES_PALETTE[train_id]
  return palette.reshape(-1).tolist()


_PALETTE = _label_id_palette()


def _save_palette_label(label: np.ndarray, path: str) -> None:
  """GTA5 labels: palette ("P") PNGs whose indices are the label ids."""
  image = Image.fromarray(label, "L")
  image.putpalette(_PALETTE)
  image.save(path, format="PNG")


def _save_grayscale_label(label: np.ndarray, path: str) -> None:
  """Cityscapes *_gtFine_labelIds.png: 8-bit grayscale label ids."""
  Image.fromarray(label, "L").save(path, format="PNG")


def _gta5_items(count: int) -> list[_Item]:
  items = []
  for index in range(count):
    name = f"{index + 1:05d}.png"  # GTA5 numbers its frames from 00001.
    items.append(_Item(SOURCE, index, "game", os.path.join("gta5", "images", name),
                       os.path.join("gta5", "labels", name), _save_palette_label))
  return items


def _cityscapes_items(split: str, cities: tuple[str, ...], stream: int, count: int) -> list[_Item]:
  items = []
  for index in range(count):
    city = cities[index % len(cities)]
    stem = f"{city}_{index // len(cities):06d}_{_FRAME:06d}"
    items.append(_Item(
        stream, index, "real",
        os.path.join("cityscapes", "leftImg8bit", split, city, f"{stem}_leftImg8bit.png"),
        os.path.join("cityscapes", "gtFine", split, city, f"{stem}_gtFine_labelIds.png"),
        _save_grayscale_label))
  return items


def plan(params: DemoParams) -> list[_Item]:
  """Lists every scene of a demo data folder, source first."""
  return (_gta5_items(params.num_source)
          + _cityscapes_items("train", TRAIN_CITIES, TARGET_TRAIN, params.num_target_train)
          + _cityscapes_items("val", VAL_CITIES, TARGET_VAL, params.num_target_val))


def _write_item(root: str, params: DemoParams, item: _Item) -> None:
  image, label = synthetic_scenes.draw_scene(
      [params.seed, item.stream, item.index], item.style, params.width, params.height)
  Image.fromarray(image, "RGB").save(os.path.join(root, item.image_path), format="PNG")
  item.save_label(label, os.path.join(root, item.label_path))


def _init_worker() -> None:
  # One process per core already; OpenCV's own threads would only contend with them.
  cv2.setNumThreads(1)


def _draw_all(root: str, params: DemoParams, num_workers: int) -> None:
  """Draws every scene of `params` into `root`, with a progress bar in images per second."""
  items = plan(params)
  for folder in sorted({os.path.dirname(p) for item in items
                        for p in (item.image_path, item.label_path)}):
    os.makedirs(os.path.join(root, folder), exist_ok=True)
  write = functools.partial(_write_item, root, params)
  # Redraw rarely when stderr is a log file rather than a terminal, to keep logs short.
  progress = tqdm(total=len(items), unit="img", desc="drawing scenes", smoothing=0.1,
                  mininterval=0.2 if sys.stderr.isatty() else 10.0)
  start = time.time()
  if num_workers <= 1:
    for item in items:
      write(item)
      progress.update()
  else:
    with multiprocessing.Pool(num_workers, initializer=_init_worker) as pool:
      for _ in pool.imap_unordered(write, items, chunksize=16):
        progress.update()
  progress.close()
  elapsed = max(time.time() - start, 1e-9)
  logging.info("drew %d scenes in %.1f s (%.0f images/s, %d workers)", len(items), elapsed,
               len(items) / elapsed, num_workers)


def read_stamp(output_dir: str) -> dict | None:
  """Returns the parameters a finished demo data folder was made with, or None if unfinished."""
  try:
    with open(os.path.join(output_dir, STAMP)) as f:
      stamp = json.load(f)
  except (OSError, json.JSONDecodeError):
    return None
  return stamp if isinstance(stamp, dict) else None


def make_demo_data(output_dir: str, params: DemoParams, overwrite: bool = False,
                   num_workers: int | None = None) -> bool:
  """Makes (or reuses) a demo data folder.

  Args:
    output_dir: The folder to create; it gets gta5/, cityscapes/ and DONE.json.
    params: What to draw.
    overwrite: Rebuild even when `output_dir` already holds data made with `params`.
    num_workers: Processes drawing scenes; None = one per available core.

  Returns:
    True if the data was drawn, False if a finished folder with the same parameters was reused.

  Raises:
    FileExistsError: if `output_dir` is a non-empty folder that this tool did not finish (no
      DONE.json) and `overwrite` is False, so nobody's files are deleted by mistake.
  """
  output_dir = os.path.abspath(output_dir)
  if os.path.isdir(output_dir):
    stamp = read_stamp(output_dir)
    if stamp == params.stamp() and not overwrite:
      logging.info("reusing %s: it was made with the same parameters (%s)", output_dir,
                   os.path.join(output_dir, STAMP))
      return False
    if stamp is None and os.listdir(output_dir) and not overwrite:
      raise FileExistsError(f"{output_dir}: exists but has no {STAMP} from this tool; pass "
                            "--overwrite to replace it")
    logging.info("rebuilding %s (%s)", output_dir,
                 "--overwrite" if overwrite else f"its parameters were {stamp}")
  elif os.path.exists(output_dir):
    raise FileExistsError(f"{output_dir}: exists and is not a folder")
  parent, name = os.path.split(output_dir)
  os.makedirs(parent, exist_ok=True)
  workers = num_workers or len(os.sched_getaffinity(0))
  partial = tempfile.mkdtemp(prefix=f".{name}.partial-", dir=parent)
  try:
    _draw_all(partial, params, workers)
    # The stamp goes in last: the folder is complete once it carries one.
    with open(os.path.join(partial, STAMP), "w") as f:
      json.dump(params.stamp(), f, indent=2, sort_keys=True)
      f.write("\n")
    if os.path.exists(output_dir):
      retired = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
      os.rename(output_dir, os.path.join(retired, name))
      os.rename(partial, output_dir)
      shutil.rmtree(retired)
    else:
      os.rename(partial, output_dir)
  finally:
    shutil.rmtree(partial, ignore_errors=True)
  logging.info("wrote %s", output_dir)
  return True


# Own FlagValues: names such as --output_dir are also other commands' (tfdaseg.utils.cli).
FLAGS = flags.FlagValues()
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Folder to create (gta5/, cityscapes/).",
                                  flag_values=FLAGS)
_SEED = flags.DEFINE_integer("seed", 0, "Dataset seed; the same seed gives identical files.",
                              flag_values=FLAGS)
_NUM_SOURCE = flags.DEFINE_integer("num_source", 2000, "Number of game (GTA5-layout) scenes.",
                                   lower_bound=0, flag_values=FLAGS)
_NUM_TARGET_TRAIN = flags.DEFINE_integer(
    "num_target_train", 2000, "Number of real (Cityscapes-layout) training scenes.",
    lower_bound=0, flag_values=FLAGS)
_NUM_TARGET_VAL = flags.DEFINE_integer(
    "num_target_val", 200, "Number of real (Cityscapes-layout) validation scenes.",
    lower_bound=0, flag_values=FLAGS)
_SIZE = flags.DEFINE_string("size", "256x128", "Image size as WIDTHxHEIGHT.", flag_values=FLAGS)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Rebuild even if a matching folder exists.",
                                flag_values=FLAGS)
_NUM_WORKERS = flags.DEFINE_integer("num_workers", None, "Drawing processes (default: one per "
                                    "core).", lower_bound=1, flag_values=FLAGS)


def parse_size(text: str) -> tuple[int, int]:
  """Parses "WIDTHxHEIGHT" into (width, height).

  Raises:
    ValueError: naming the text, when it is not two positive integers joined by "x".
  """
  match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
  if not match or min(int(match[1]), int(match[2])) < 1:
    raise ValueError(f"--size={text!r}: expected WIDTHxHEIGHT, e.g. 256x128")
  return int(match[1]), int(match[2])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  width, height = parse_size(_SIZE.value)
  params = DemoParams(seed=_SEED.value, num_source=_NUM_SOURCE.value,
                      num_target_train=_NUM_TARGET_TRAIN.value,
                      num_target_val=_NUM_TARGET_VAL.value, width=width, height=height)
  make_demo_data(_OUTPUT_DIR.value, params, overwrite=_OVERWRITE.value,
                 num_workers=_NUM_WORKERS.value)


def run() -> None:
  """Console entry point."""
  flags.mark_flag_as_required("output_dir", flag_values=FLAGS)
  run_app(main, FLAGS)


if __name__ == "__main__":
  run()
