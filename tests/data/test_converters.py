"""Each dataset converter, run through the CLI on a miniature copy of the real on-disk format.

Every decoded label pixel is compared with ids computed independently from the raw ids
(tests/helpers/datasets.py), and images must be stored byte for byte as on disk.
"""

import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from tests.helpers import datasets
from tests.helpers.cli import run_cli
from tfdaseg.data import labels
from tfdaseg.data.converters import CONVERTERS
from tfdaseg.data.converters import ConverterOptions
from tools import convert_to_tfrecord as cli


def convert(**flag_values) -> None:
  """Runs the converter CLI's `main` with `--name=value` flags."""
  argv = ["convert_to_tfrecord"] + [f"--{k}={v}" for k, v in flag_values.items()]
  run_cli(cli.main, argv, cli.FLAGS)


def assert_converted(mini: datasets.MiniDataset, pattern: str) -> dict:
  """Checks every record of `pattern` against the miniature dataset; returns the records."""
  records = datasets.read_records(pattern)
  assert sorted(records) == sorted(mini.expected)
  for filename, expected in mini.expected.items():
    record = records[filename]
    with open(mini.image_files[filename], "rb") as f:
      assert record["raw"] == f.read(), f"{filename}: image bytes changed"
    if expected is None:
      assert not record["has_label_key"] and not record["has_label"]
      continue
    assert record["has_label"]
    np.testing.assert_array_equal(record["label"][..., 0], expected, err_msg=filename)
    assert record["image"].shape[:2] == expected.shape
  return records


@pytest.mark.parametrize("name, writer", [
    ("gta5", datasets.write_gta5),
    ("synthia", datasets.write_synthia),
    ("cityscapes", datasets.write_cityscapes),
    ("idd", datasets.write_idd),
    ("camvid", datasets.write_camvid),
])
def test_cli_converts_every_pixel(tmp_path, name, writer):
  mini = writer(str(tmp_path / "raw"))
  out = tmp_path / "out"
  convert(dataset=name, data_dir=mini.root, split=mini.split, output_dir=out, num_shards=2,
          num_workers=0)
  assert len(list(out.glob(f"{name}-{mini.split}-*-of-00002.tfrecord"))) == 2
  assert_converted(mini, str(out / f"{name}-{mini.split}-*.tfrecord"))


def test_cityscapes_test_split_is_unlabelled_and_ignores_other_gtfine_files(tmp_path):
  mini = datasets.write_cityscapes(str(tmp_path / "raw"), split="test")
  convert(dataset="cityscapes", data_dir=mini.root, split="test", output_dir=tmp_path / "out",
          num_workers=0)
  records = assert_converted(mini, str(tmp_path / "out" / "cityscapes-test-*.tfrecord"))
  assert all((r["label"] == labels.IGNORE_ID).all() for r in records.values())


def test_unlabeled_flag_writes_images_only(tmp_path):
  mini = datasets.write_gta5(str(tmp_path / "raw"))
  convert(dataset="gta5", data_dir=mini.root, split="train", output_dir=tmp_path / "out",
          unlabeled=True, num_workers=0)
  mini.expected = dict.fromkeys(mini.expected)
  assert_converted(mini, str(tmp_path / "out" / "gta5-train-*.tfrecord"))


def test_camvid_colour_labels(tmp_path):
  mini = datasets.write_camvid(str(tmp_path / "raw"), colour_labels=True)
  convert(dataset="camvid", data_dir=mini.root, split="train", output_dir=tmp_path / "out",
          camvid_colour_labels=True, num_workers=0)
  assert_converted(mini, str(tmp_path / "out" / "camvid-train-*.tfrecord"))


def test_voc_train_and_trainaug_with_sbd(tmp_path):
  minis = datasets.write_voc(str(tmp_path / "voc"), sbd_root=str(tmp_path / "sbd"))
  out = tmp_path / "out"
  convert(dataset="voc", data_dir=minis["train"].root, split="train", output_dir=out,
          num_workers=0)
  convert(dataset="voc", data_dir=minis["train"].root, split="trainaug", output_dir=out,
          sbd_dir=tmp_path / "sbd", num_workers=0)
  records = assert_converted(minis["train"], str(out / "voc-train-*.tfrecord"))
  aug = assert_converted(minis["trainaug"], str(out / "voc-trainaug-*.tfrecord"))
  # SBD train + val + VOC train - VOC val: the VOC val image is excluded even though SBD has it.
  assert sorted(aug) == sorted(f"JPEGImages/{i}.jpg" for i in ("2007_000032", "2007_000039",
                                                                "2008_000002", "2008_000003"))
  for record in list(records.values()) + list(aug.values()):
    assert record["format"] == "jpeg"
    present = np.unique(record["label"])
    np.testing.assert_array_equal(record["class_labels"], present[present != labels.IGNORE_ID])


def test_folder_with_label_map(tmp_path):
  mini, label_map = datasets.write_folder(str(tmp_path / "raw"))
  convert(dataset="folder", data_dir=mini.root, split="train", output_dir=tmp_path / "out",
          label_map=label_map, num_workers=0)
  assert_converted(mini, str(tmp_path / "out" / "folder-train-*.tfrecord"))


def test_list_file_selects_images(tmp_path):
  mini = datasets.write_gta5(str(tmp_path / "raw"))
  list_file = tmp_path / "train.txt"
  list_file.write_text("00001.png\n00003.png\n")
  convert(dataset="gta5", data_dir=mini.root, split="train", output_dir=tmp_path / "out",
          list_file=list_file, num_workers=0)
  mini.expected = {k: v for k, v in mini.expected.items() if "00002" not in k}
  assert_converted(mini, str(tmp_path / "out" / "gta5-train-*.tfrecord"))


def test_synthia_helper_puts_class_in_first_channel(tmp_path):
  """Independent of OpenCV's channel order: PIL reads 16-bit RGB as the high bytes."""
  path = str(tmp_path / "label.png")
  classes = np.full((4, 6), 5, np.uint16)
  datasets.write_synthia_label(path, classes, np.full((4, 6), 0x1200, np.uint16))
  with open(path, "rb") as f:
    rgb_high_bytes = np.array(Image.open(f).convert("RGB"))
  np.testing.assert_array_equal(rgb_high_bytes[0, 0], [0, 0x12, 0])  # R=5, G=0x1200, B=7
  converter = CONVERTERS.get("synthia")(str(tmp_path))
  np.testing.assert_array_equal(converter.read_label(path),
                                labels.SYNTHIA_ID_TO_TRAIN_ID[5])


@pytest.mark.parametrize("name, expected_folder", [
    ("gta5", "images"), ("synthia", "RGB"), ("cityscapes", os.path.join("leftImg8bit", "train")),
    ("idd", os.path.join("leftImg8bit", "train")), ("camvid", "train"), ("voc", "JPEGImages"),
])
def test_wrong_data_dir_names_expected_folder(tmp_path, name, expected_folder):
  with pytest.raises(FileNotFoundError, match=expected_folder):
    CONVERTERS.get(name)(str(tmp_path)).list_pairs("train")


def test_empty_image_folder_is_an_error(tmp_path):
  (tmp_path / "images").mkdir()
  (tmp_path / "labels").mkdir()
  with pytest.raises(FileNotFoundError, match="no images"):
    CONVERTERS.get("gta5")(str(tmp_path)).list_pairs("train")


def test_folder_label_map_errors_name_the_file(tmp_path):
  bad = tmp_path / "map.json"
  bad.write_text('{"storage": "cityscapes19", "map": {"3": 40}}')
  options = ConverterOptions(label_map=str(bad))
  with pytest.raises(ValueError, match="map.json.*40"):
    CONVERTERS.get("folder")(str(tmp_path), options)


def test_tfds_cityscapes_reads_prepared_builder_data(tmp_path):
  """TFDS is mocked (no download): its cityscapes records become tiny PNGs of raw label ids."""
  import tensorflow_datasets as tfds

  rng = np.random.default_rng(0)
  split_ids = {"validation": ["frankfurt_000000_000294", "lindau_000001_000019",
                              "munster_000002_000019"]}
  raw = {i: datasets.random_ids(rng, (16, 8), range(34)).astype(np.uint8)
         for i in split_ids["validation"]}
  images = {i: datasets.png_bytes(datasets.random_image(rng, (16, 8))) for i in raw}

  def as_dataset(self, split, **kwargs):
    del self, kwargs
    name, _, bounds = split.partition("[")
    ids = split_ids[name]
    if bounds:
      start, stop = (int(v) for v in bounds.rstrip("]").split(":"))
      ids = ids[start:stop]
    return tf.data.Dataset.from_tensor_slices({
        "image_id": ids,
        "image_left": [images[i] for i in ids],
        "segmentation_label": [datasets.png_bytes(raw[i]) for i in ids]})

  out = tmp_path / "out"
  with tfds.testing.mock_data(as_dataset_fn=as_dataset):
    convert(dataset="tfds_cityscapes", data_dir=tmp_path / "tfds", split="validation",
            output_dir=out, num_shards=2, num_workers=0)
  records = datasets.read_records(str(out / "tfds_cityscapes-validation-*.tfrecord"))
  assert sorted(records) == sorted(raw)
  for image_id, ids in raw.items():
    assert records[image_id]["raw"] == images[image_id]
    np.testing.assert_array_equal(records[image_id]["label"][..., 0],
                                  datasets.expected_ids(ids, labels.CITYSCAPES_ID_TO_TRAIN_ID))


def test_console_entry_point_reports_bad_input_in_one_line(tmp_path):
  """`run()` (the tfdaseg-convert console script): flags parsed, error named, non-zero exit."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  result = subprocess.run(
      [sys.executable, "-c", "from tools.convert_to_tfrecord import run; run()",
       "--dataset=camvid", f"--data_dir={tmp_path}", "--split=val", f"--output_dir={tmp_path}"],
      cwd=root, capture_output=True, text=True, timeout=300,
      env={**os.environ, "PYTHONPATH": root, "TF_CPP_MIN_LOG_LEVEL": "3"})
  assert result.returncode != 0
  assert f"convert_to_tfrecord: error: {tmp_path}/val: missing folder" in result.stderr
  assert "Traceback" not in result.stderr
