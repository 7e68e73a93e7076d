"""tools/make_object_scenes.py: VOC-layout scenes the VOC converter reads, image-level labels too."""

import numpy as np

from tests.helpers import datasets
from tfdaseg.data.converters import CONVERTERS
from tfdaseg.data.tfrecord_writer import WriteOptions, write_split
from tools import make_object_scenes


def test_scenes_convert_with_their_classes_and_image_labels(tmp_path):
  splits = make_object_scenes.write_scenes(str(tmp_path / "raw"), num_train=6, num_val=2,
                                           width=48, height=40, num_classes=6, seed=1)
  assert len(splits["train"]) == 6 and not set(splits["train"]) & set(splits["val"])
  converter = CONVERTERS.get("voc")(str(tmp_path / "raw"))
  write_split(converter, "voc", "train", str(tmp_path / "tf"), WriteOptions(num_workers=0))
  records = datasets.read_records(str(tmp_path / "tf" / "voc-train-*.tfrecord"))
  assert len(records) == 6
  for record in records.values():
    ids = np.unique(record["label"])
    assert set(ids) <= set(range(7)) | {255} and 255 in ids  # object outlines are void
    objects = sorted(set(ids) - {0, 255})
    assert objects and sorted(record["class_labels"]) == sorted({0, *objects})
    assert record["image"].shape == (40, 48, 3)
