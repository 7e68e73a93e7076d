"""Resizing in the input pipeline against the reference's PIL, at the datasets' real sizes."""

import numpy as np
from PIL import Image
import pytest

from tests.helpers import datasets
from tfdaseg.data import pipeline
from tfdaseg.data.in_memory import write_arrays
from tfdaseg.data.preprocessing import CAFFE_BGR_MEAN

# (native size, reference input size), (width, height): GTA5 and Cityscapes.
CASES = {"gta5": ((1914, 1052), (1280, 720)), "cityscapes": ((2048, 1024), (1024, 512))}
# Within this of PIL's uint8 output, in levels: PIL rounds and clips after each of its two
# passes, tfdaseg once, so most pixels agree and the rest differ by one level; a few differ by
# more where PIL's first pass clipped an overshoot at an edge (measured: mean 0.18 and 0.15,
# max 4 and 1, for the two cases).
MAX_MEAN_ERROR = 0.5
MAX_P999_ERROR = 1.0
MAX_ERROR = 6


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
  """One real-size photo-like image and label per case, converted as its own split."""
  out = tmp_path_factory.mktemp("records")
  rng = np.random.default_rng(0)
  written = {}
  for name, (native, _) in CASES.items():
    image = datasets.smooth_noisy_image(rng, native)
    label = datasets.random_ids(rng, native, list(range(19)) + [255]).astype(np.uint8)
    write_arrays(str(out), name, "train", [image], [label])
    written[name] = {"pattern": str(out / f"{name}-train-*.tfrecord"), "image": image,
                     "label": label}
  return written


def _read(split: dict, size: tuple[int, int], **kwargs) -> tuple[np.ndarray, np.ndarray]:
  """The pipeline's (RGB pixel values, label) for the split's one image at `size`."""
  dataset = pipeline.make_dataset(split["pattern"], class_set="19", image_size=size,
                                  batch_size=1, training=False, **kwargs)
  batch = next(iter(dataset))
  rgb = (batch["image"].numpy()[0] + np.asarray(CAFFE_BGR_MEAN, np.float32))[..., ::-1]
  return rgb, batch["label"].numpy()[0]


def _errors(ours: np.ndarray, pil: np.ndarray) -> tuple[float, float, float]:
  """(mean, 99.9th percentile, max) absolute difference in levels."""
  error = np.abs(ours - pil.astype(np.float32))
  return float(error.mean()), float(np.percentile(error, 99.9)), float(error.max())


def _pil_bicubic(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))


@pytest.mark.parametrize("name", CASES)
def test_default_image_resize_is_pil_bicubic(splits, name):
  size = CASES[name][1]
  ours, _ = _read(splits[name], size)
  mean, p999, worst = _errors(ours, _pil_bicubic(splits[name]["image"], size))
  assert mean < MAX_MEAN_ERROR and p999 <= MAX_P999_ERROR and worst <= MAX_ERROR, (
      f"{name}: mean {mean:.3f}, p99.9 {p999}, max {worst}")


@pytest.mark.parametrize("name", CASES)
def test_bilinear_is_far_from_pil_bicubic(splits, name):
  # Without antialiasing a downscale reads 2x2 pixels: aliasing (GTA5), a box filter
  # (Cityscapes). Measured: mean 4.4 and 3.7 levels, max 51 and 26.
  size = CASES[name][1]
  ours, _ = _read(splits[name], size, interpolation="bilinear")
  mean, p999, _ = _errors(ours, _pil_bicubic(splits[name]["image"], size))
  assert mean > 4 * MAX_MEAN_ERROR and p999 > 10 * MAX_P999_ERROR


@pytest.mark.parametrize("name", CASES)
def test_labels_are_pil_nearest(splits, name):
  size = CASES[name][1]
  _, label = _read(splits[name], size)
  expected = np.asarray(Image.fromarray(splits[name]["label"]).resize(
      size, Image.Resampling.NEAREST))
  np.testing.assert_array_equal(label, expected)
