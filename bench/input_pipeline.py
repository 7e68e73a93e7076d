"""Input pipeline throughput: tfdaseg's tf.data pipeline vs a plain PIL + numpy loader.

Generates its own street-like PNGs at the datasets' native sizes (GTA5 1914x1052 with palette
labels, Cityscapes 2048x1024 images), converts them with the real converters, then measures
images/s at the reference input sizes, batch 1, in one process on the same cores:
  * tfdaseg: `make_dataset` (decode, resize, mean subtraction, label nearest + remap), with
    its default bilinear filter, with interpolation="bicubic" (PIL-like, antialiased), and
    on shards converted with `--resize` to the input size (the resize done once, offline);
  * plain: what the AdaptSegNet reference's GTA5DataSet / cityscapesDataSet do per image:
    `Image.open(...).convert('RGB').resize(size, Image.BICUBIC)`, label nearest and mapped id
    by id, `np.asarray(float32)`, RGB -> BGR, minus mean, transpose to CHW.
The source (GTA5-like, 1280x720) stream has labels, the target (Cityscapes-like, 1024x512)
stream has none, as in adaptation training.

Prints progress, then LAST one JSON object per line:
  {"bench": "input_pipeline", "size": "1280x720", "tfdaseg_images_per_s": ...,
   "plain_images_per_s": ..., ...}

Usage: python bench/input_pipeline.py [--num_images=24] [--rounds=3]
"""

import dataclasses
import functools
import itertools
import json
import os
import sys
import tempfile
import time
from typing import Callable

from absl import app
from absl import flags
from absl import logging
import numpy as np
from PIL import Image

from tfdaseg.data import labels
from tfdaseg.data import pipeline
from tfdaseg.data.converters import CONVERTERS, ConverterOptions
from tfdaseg.data.preprocessing import CAFFE_BGR_MEAN
from tfdaseg.data.tfrecord_writer import WriteOptions, write_split

_NUM_IMAGES = flags.DEFINE_integer("num_images", 24, "Images generated per case.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Timed rounds (two passes over the images each) "
                                "per loader; the median is reported.")
_WORK_DIR = flags.DEFINE_string("work_dir", None, "Where to generate data (default: a temp dir).")


@dataclasses.dataclass(frozen=True)
class Case:
  """One measured stream: a dataset layout at its native size, read at the reference size."""

  name: str  # the converter
  native_size: tuple[int, int]  # (width, height) generated
  input_size: tuple[int, int]  # (width, height) read, as the reference's input_size flags
  labelled: bool


CASES = (
    Case("gta5", (1914, 1052), (1280, 720), labelled=True),
    Case("cityscapes", (2048, 1024), (1024, 512), labelled=False),
)


def _scene(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
  """A random-ish street-like image and its Cityscapes label ids: blocks, gradients, noise."""
  width, height = size
  label_ids = np.array(sorted(labels.CITYSCAPES_ID_TO_TRAIN_ID) + [0], np.uint8)
  coarse = rng.choice(label_ids, (height // 64 + 1, width // 64 + 1))
  label = np.kron(coarse, np.ones((64, 64), np.uint8))[:height, :width]
  colours = rng.integers(0, 256, (256, 3)).astype(np.float32)
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
  image = colours[label] * 0.7 + (xx / width * 60 + yy / height * 40)[..., None]
  image += rng.normal(0, 6, image.shape).astype(np.float32)
  return np.clip(image, 0, 255).astype(np.uint8), label


def generate(case: Case, root: str, count: int, rng: np.random.Generator) -> list[tuple]:
  """Writes `count` images (and labels) in the case's dataset layout; returns their paths."""
  files = []
  for i in range(count):
    image, label = _scene(rng, case.native_size)
    if case.name == "gta5":
      image_path = os.path.join(root, "images", f"{i:05d}.png")
      label_path = os.path.join(root, "labels", f"{i:05d}.png")
    else:
      stem = os.path.join("bench", f"bench_{i:06d}_000019")
      image_path = os.path.join(root, "leftImg8bit", "train", f"{stem}_leftImg8bit.png")
      label_path = os.path.join(root, "gtFine", "train", f"{stem}_gtFine_labelIds.png")
    for path in (image_path, label_path):
      os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(image).save(image_path)
    label_image = Image.frombytes("P", case.native_size, label.tobytes())
    label_image.putpalette([c for i in range(256) for c in ((i * 37) % 256, (i * 91) % 256, i)])
    label_image.save(label_path)
    files.append((image_path, label_path if case.labelled else None))
    logging.info("generated %s image %d/%d", case.name, i + 1, count)
  return files


def plain_load(image_path: str, label_path: str | None,
               size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
  """The reference datasets' __getitem__ (AdaptSegNet dataset/gta5_dataset.py et al.)."""
  image = Image.open(image_path).convert("RGB").resize(size, Image.Resampling.BICUBIC)
  image = np.asarray(image, np.float32)
  label_copy = None
  if label_path is not None:
    label = Image.open(label_path).resize(size, Image.Resampling.NEAREST)
    label = np.asarray(label, np.float32)
    label_copy = 255 * np.ones(label.shape, dtype=np.float32)
    for k, v in labels.CITYSCAPES_ID_TO_TRAIN_ID.items():
      label_copy[label == k] = v
  image = image[:, :, ::-1]  # RGB -> BGR
  image -= np.asarray(CAFFE_BGR_MEAN, np.float32)
  return image.transpose((2, 0, 1)).copy(), label_copy


@dataclasses.dataclass
class Timing:
  """Throughput of one loader: images/s of wall time, and CPU ms (all threads) per image."""

  images_per_s: list[float] = dataclasses.field(default_factory=list)
  cpu_ms_per_image: list[float] = dataclasses.field(default_factory=list)

  def measure(self, load_one: Callable[[], object], count: int) -> None:
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
      load_one()
    self.images_per_s.append(count / (time.perf_counter() - wall))
    self.cpu_ms_per_image.append((time.process_time() - cpu) * 1000 / count)

  def median(self) -> tuple[float, float]:
    return float(np.median(self.images_per_s)), float(np.median(self.cpu_ms_per_image))


def plain_loader(files: list[tuple], size: tuple[int, int]) -> Callable[[], object]:
  """Returns a function loading the next image (cycling) like the reference's DataLoader."""
  cycle = itertools.cycle(files)
  return lambda: plain_load(*next(cycle), size)


def tfdaseg_loader(pattern: str, size: tuple[int, int],
                   interpolation: str) -> Callable[[], object]:
  """Returns a function taking the next batch of a warmed-up `make_dataset` iterator."""
  dataset = pipeline.make_dataset(pattern, class_set="19", image_size=size, batch_size=1,
                                  training=True, interpolation=interpolation)
  iterator = iter(dataset)
  for _ in range(4):  # builds the pipeline and lets autotuning settle
    next(iterator)
  return lambda: next(iterator)


def main(argv: list[str]) -> None:
  del argv
  work_dir = _WORK_DIR.value or tempfile.mkdtemp(prefix="tfdaseg-bench-")
  rng = np.random.default_rng(0)
  results = []
  for case in CASES:
    root = os.path.join(work_dir, case.name)
    files = generate(case, root, _NUM_IMAGES.value, rng)
    converter = CONVERTERS.get(case.name)(root, ConverterOptions(unlabeled=not case.labelled))
    patterns = {}
    # As stored on disk, and resized once at conversion (--resize) to the input size.
    for variant, resize in (("native", None), ("preresized", case.input_size)):
      out = os.path.join(work_dir, f"records_{variant}")
      manifest = write_split(converter, case.name, "train", out, WriteOptions(
          num_shards=min(4, len(files)), overwrite=True, resize=resize))
      logging.info("converted %d %s images (%s)", manifest["count"], case.name, variant)
      patterns[variant] = os.path.join(out, f"{case.name}-train-*.tfrecord")
    loaders = {"plain": lambda: plain_loader(files, case.input_size)}
    for interpolation in pipeline.INTERPOLATIONS:
      loaders[interpolation] = functools.partial(tfdaseg_loader, patterns["native"],
                                                 case.input_size, interpolation)
    loaders["preresized"] = functools.partial(tfdaseg_loader, patterns["preresized"],
                                              case.input_size, "bilinear")
    timings = {name: Timing() for name in loaders}
    # Rounds alternate the loaders so that load from other users of the machine hits all
    # alike. A tf.data iterator lives for one measurement only: alive, it would keep working
    # in the background while the next loader is timed.
    for round_index in range(_ROUNDS.value):
      for name, make_loader in loaders.items():
        timings[name].measure(make_loader(), 2 * len(files))
        logging.info("%s round %d: %s %.2f images/s, %.1f CPU ms/image", case.name,
                     round_index + 1, name, timings[name].images_per_s[-1],
                     timings[name].cpu_ms_per_image[-1])
    plain, plain_cpu = timings["plain"].median()
    ours, ours_cpu = timings["bilinear"].median()
    bicubic, bicubic_cpu = timings["bicubic"].median()
    preresized, preresized_cpu = timings["preresized"].median()
    results.append({
        "bench": "input_pipeline",
        "size": f"{case.input_size[0]}x{case.input_size[1]}",
        # make_dataset's default filter (bicubic); the plain loader uses PIL BICUBIC.
        "tfdaseg_images_per_s": round(ours, 2),
        "plain_images_per_s": round(plain, 2),
        "speedup": round(ours / plain, 2),
        # interpolation="bicubic": PIL-like antialiased bicubic, the reference's exact work.
        "tfdaseg_bicubic_images_per_s": round(bicubic, 2),
        "speedup_bicubic": round(bicubic / plain, 2),
        # CPU time per image (all threads): less sensitive to other users of the machine.
        "tfdaseg_cpu_ms_per_image": round(ours_cpu, 1),
        "tfdaseg_bicubic_cpu_ms_per_image": round(bicubic_cpu, 1),
        "plain_cpu_ms_per_image": round(plain_cpu, 1),
        # Shards converted with --resize to the input size: no resize left at read time.
        "tfdaseg_preresized_images_per_s": round(preresized, 2),
        "speedup_preresized": round(preresized / plain, 2),
        "tfdaseg_preresized_cpu_ms_per_image": round(preresized_cpu, 1),
        "native_size": f"{case.native_size[0]}x{case.native_size[1]}",
        "labelled": case.labelled,
        "rounds": _ROUNDS.value,
        "cpus": os.cpu_count(),
    })
  sys.stdout.flush()
  for result in results:
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
  app.run(main)
