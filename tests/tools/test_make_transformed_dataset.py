"""tools/make_transformed_dataset.py and tfdaseg.data.transforms on a miniature converted VOC."""

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from tests.helpers import datasets
from tests.helpers.cli import run_cli
from tfdaseg.data import transforms
from tfdaseg.data.converters import CONVERTERS
from tfdaseg.data.tfrecord_writer import WriteOptions, write_split
from tools import make_transformed_dataset

_CHAIN = "gamma=1.8,noise,jpeg=40"


@pytest.fixture(scope="module")
def voc_split(tmp_path_factory) -> str:
  """A miniature VOC train split converted into two shards; returns its pattern."""
  root = tmp_path_factory.mktemp("voc")
  minis = datasets.write_voc(str(root / "raw"))
  converter = CONVERTERS.get("voc")(minis["train"].root)
  write_split(converter, "voc", "train", str(root / "tfrecords"),
              WriteOptions(num_shards=2, num_workers=0))
  return str(root / "tfrecords" / "voc-train-*.tfrecord")


def _shard_order(pattern: str) -> list[list[str]]:
  import tensorflow as tf
  from tfdaseg.data import schema
  order = []
  for path in sorted(tf.io.gfile.glob(pattern)):
    order.append([schema.decode_example(r)["filename"].numpy().decode()
                  for r in tf.data.TFRecordDataset(path)])
  return order


def _run_cli(*argv: str) -> None:
  """The tool's main with its flags parsed from `argv` (in this process, flags reset after)."""
  run_cli(make_transformed_dataset.main, ["make_transformed_dataset", *argv],
          make_transformed_dataset.FLAGS)


def test_copy_is_aligned_and_transformed_through_the_cli(voc_split, tmp_path):
  out = str(tmp_path / "copy")
  _run_cli(f"--input={voc_split}", f"--output_dir={out}", f"--transforms={_CHAIN}", "--seed=3",
           "--num_workers=0")
  copy_pattern = os.path.join(out, "voc_transformed-train-*.tfrecord")
  assert _shard_order(copy_pattern) == _shard_order(voc_split)
  with open(os.path.join(out, "voc_transformed-train.json")) as f:
    manifest = json.load(f)
  assert manifest["options"]["transforms"] == "gamma=1.8,noise=10,jpeg=40"
  assert manifest["options"]["seed"] == 3 and manifest["options"]["source"] == voc_split
  original, copy = datasets.read_records(voc_split), datasets.read_records(copy_pattern)
  assert set(copy) == set(original)
  chain = transforms.parse_chain(_CHAIN)
  for name, record in copy.items():
    np.testing.assert_array_equal(record["label"], original[name]["label"])
    np.testing.assert_array_equal(record["class_labels"], original[name]["class_labels"])
    assert record["format"] == "png"
    source = np.asarray(Image.open(io.BytesIO(original[name]["raw"])).convert("RGB"))
    np.testing.assert_array_equal(record["image"],
                                  transforms.apply_chain(chain, source, 3, name))
    assert np.abs(record["image"].astype(int) - source).mean() > 5


def test_seed_fixes_the_pixels(voc_split, tmp_path):
  paths = {}
  for run, seed in (("a", 1), ("b", 1), ("c", 2)):
    make_transformed_dataset.make_transformed_split(voc_split, str(tmp_path / run), "style,noise",
                                                    seed=seed, num_workers=0)
    paths[run] = datasets.read_records(str(tmp_path / run / "*.tfrecord"))
  for name in paths["a"]:
    np.testing.assert_array_equal(paths["a"][name]["image"], paths["b"][name]["image"])
    assert not np.array_equal(paths["a"][name]["image"], paths["c"][name]["image"])


def test_part_of_a_split_is_refused(voc_split, tmp_path):
  first = voc_split.replace("*", "00000-of-00002")
  with pytest.raises(ValueError, match="only some shards"):
    make_transformed_dataset.make_transformed_split(first, str(tmp_path), "gamma")


@pytest.mark.parametrize("name", transforms.TRANSFORMS.names())
def test_every_transform_moves_pixels_and_keeps_the_shape(name):
  image = datasets.smooth_noisy_image(np.random.default_rng(0), (20, 12))
  out = transforms.apply_chain(transforms.parse_chain(name), image, seed=0, filename="x.jpg")
  assert out.shape == image.shape and out.dtype == np.uint8
  assert np.abs(out.astype(int) - image).mean() > 0.5


@pytest.mark.parametrize("text, problem", [("", "no transform"), ("gamma=x", "not a number"),
                                           ("jpeg=0", "JPEG quality"), ("warp", "unknown")])
def test_bad_chains(text, problem):
  with pytest.raises(ValueError, match=problem):
    transforms.parse_chain(text)
