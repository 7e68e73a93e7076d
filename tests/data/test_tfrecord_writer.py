"""The shared TFRecord writer: errors, --skip_bad, atomic shards, resume, manifest, TFDS."""

import json
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from tests.helpers import datasets
from tfdaseg.data import class_stats, integrity, labels, schema
from tfdaseg.data import shards
from tfdaseg.data.converters import BadFileError, CONVERTERS, ConverterOptions
from tfdaseg.data.tfrecord_writer import WriteOptions, encoding_workers, shuffle_pairs, write_split


def write(name: str, root: str, out, split: str = "train", options=ConverterOptions(),
          **write_options) -> dict:
  write_options.setdefault("num_workers", 0)
  converter = CONVERTERS.get(name)(root, options)
  return write_split(converter, name, split, str(out), WriteOptions(**write_options))


def shard_files(out, prefix: str) -> list[str]:
  return sorted(p.name for p in out.glob(f"{prefix}-*-of-*.tfrecord"))


def assert_class_stats_count(pattern: str, expected: dict[str, np.ndarray]):
  """Each record's statistics are numpy's counts of the label it holds (found at its offset)."""
  stats, paths = class_stats.read_class_stats(pattern)
  names = []
  for shard, offset, length, pixels in stats["records"]:
    record = integrity.read_record(paths[shard], offset, length)
    name = tf.train.Example.FromString(record).features.feature[
        schema.IMAGE_FILENAME].bytes_list.value[0].decode()
    values, counts = np.unique(expected[name], return_counts=True)
    assert pixels == {str(v): int(c) for v, c in zip(values, counts) if v != labels.IGNORE_ID}
    names.append(name)
  assert sorted(names) == sorted(expected)


def test_class_statistics_come_from_the_encoder_so_labels_are_decoded_once(tmp_path, monkeypatch):
  mini = datasets.write_gta5(str(tmp_path / "raw"))
  out = tmp_path / "out"
  calls = {"read_label": 0, "label_pixels": 0}
  converter_class = CONVERTERS.get("gta5")

  def counted(name, fn):
    def wrapper(*args, **kwargs):
      calls[name] += 1
      return fn(*args, **kwargs)
    return wrapper

  monkeypatch.setattr(converter_class, "read_label",
                      counted("read_label", converter_class.read_label))
  monkeypatch.setattr(class_stats, "label_pixels",
                      counted("label_pixels", class_stats.label_pixels))
  write("gta5", mini.root, out, num_shards=2)  # in this process (num_workers=0)
  assert calls == {"read_label": len(mini.expected), "label_pixels": 0}
  pattern = str(out / "gta5-train-*.tfrecord")
  assert_class_stats_count(pattern, mini.expected)
  # The tool's second read of the stored labels writes the very same file.
  path = out / "gta5-train-class_stats.json"
  from_encoder = path.read_bytes()
  path.unlink()
  class_stats.compute_class_stats(pattern)
  assert calls["label_pixels"] == len(mini.expected)
  assert path.read_bytes() == from_encoder


def test_size_mismatch_names_both_files(tmp_path):
  mini = datasets.write_gta5(str(tmp_path / "raw"))
  label = os.path.join(mini.root, "labels", "00002.png")
  datasets.save_png(label, np.zeros((5, 7), np.uint8), palette=[0] * 768)
  with pytest.raises(BadFileError, match=r"labels/00002\.png: label is 7x5 but image .*00002"):
    write("gta5", mini.root, tmp_path / "out")


@pytest.mark.parametrize("name, writer, bad_label, bad_value", [
    ("camvid", datasets.write_camvid, "trainannot/0001TP_000001.png", 12),
    ("voc", lambda root: datasets.write_voc(root)["train"], "SegmentationClass/2007_000039.png",
     30),
])
def test_ids_outside_the_dataset_range_are_errors(tmp_path, name, writer, bad_label, bad_value):
  mini = writer(str(tmp_path / "raw"))
  path = os.path.join(mini.root, bad_label)
  raw = np.array(Image.open(path))
  raw[1, 2] = bad_value
  datasets.save_png(path, raw, palette=[c for rgb in labels.voc_palette() for c in rgb])
  with pytest.raises(BadFileError, match=rf"{bad_label}: label ids \[{bad_value}\]"):
    write(name, mini.root, tmp_path / "out")


def test_synthia_wrong_channel_values_are_errors(tmp_path):
  mini = datasets.write_synthia(str(tmp_path / "raw"))
  path = os.path.join(mini.root, "GT", "LABELS", "0000001.png")
  classes = np.full((30, 40), 300, np.uint16)
  datasets.write_synthia_label(path, classes, classes)
  with pytest.raises(BadFileError, match=r"0000001\.png: label ids \[300\]"):
    write("synthia", mini.root, tmp_path / "out")


def test_unreadable_image_is_named(tmp_path):
  mini = datasets.write_gta5(str(tmp_path / "raw"))
  with open(os.path.join(mini.root, "images", "00003.png"), "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n truncated")
  # Raised in a worker process and re-raised here, message intact.
  with pytest.raises(BadFileError, match=r"images/00003\.png: cannot decode image"):
    write("gta5", mini.root, tmp_path / "out", num_workers=2)


def test_skip_bad_records_skipped_files_in_manifest(tmp_path):
  mini = datasets.write_gta5(str(tmp_path / "raw"))
  os.remove(os.path.join(mini.root, "labels", "00002.png"))
  manifest = write("gta5", mini.root, tmp_path / "out", skip_bad=True, num_shards=2)
  assert manifest["skipped_count"] == 1
  assert manifest["skipped"][0]["filename"] == "images/00002.png"
  assert "labels/00002.png: cannot read" in manifest["skipped"][0]["reason"]
  assert manifest["count"] == 2 and sum(manifest["shard_lengths"]) == 2
  records = datasets.read_records(str(tmp_path / "out" / "gta5-train-*.tfrecord"))
  assert sorted(records) == ["images/00001.png", "images/00003.png"]


def test_manifest_counts_pixels_per_storage_class(tmp_path):
  mini = datasets.write_gta5(str(tmp_path / "raw"))
  manifest = write("gta5", mini.root, tmp_path / "out", num_shards=2)
  all_ids = np.concatenate([e.ravel() for e in mini.expected.values()])
  counts = np.bincount(all_ids, minlength=256)
  assert manifest["class_pixel_counts"] == counts[:19].tolist()
  assert manifest["ignore_pixel_count"] == counts[255]
  assert manifest["class_space"] == "cityscapes19"
  assert manifest["class_names"] == list(labels.CITYSCAPES_CLASSES)
  assert manifest["count"] == 3 and manifest["num_shards"] == 2
  assert manifest["shards"] == shard_files(tmp_path / "out", "gta5-train")
  assert manifest["shard_num_bytes"] == [(tmp_path / "out" / name).stat().st_size
                                         for name in manifest["shards"]]
  on_disk = json.loads((tmp_path / "out" / "gta5-train.json").read_text())
  assert on_disk == manifest


def _break_last_label(mini) -> tuple[str, bytes]:
  """Overwrites the label of the last pair written (pairs are permuted before sharding) with
  bytes that are no PNG; returns its path and its good bytes."""
  written = shuffle_pairs(CONVERTERS.get("gta5")(mini.root).list_pairs("train"), 0)
  label = written[-1].label
  good = open(label, "rb").read()
  with open(label, "wb") as f:
    f.write(b"not a png")
  return label, good


def test_interrupted_run_resumes_after_completed_shards(tmp_path):
  mini = datasets.write_gta5(str(tmp_path / "raw"))
  out = tmp_path / "out"
  # A bad label in the last shard written.
  label, good = _break_last_label(mini)
  with pytest.raises(BadFileError, match=os.path.basename(label)):
    write("gta5", mini.root, out, num_shards=3)
  # Shards 0 and 1 are complete; shard 2 left neither a shard nor a temporary file.
  assert shard_files(out, "gta5-train") == [shards.shard_name("gta5", "train", i, 3)
                                            for i in range(2)]
  assert not list(out.glob(f"*{shards.TMP_MARKER}*"))
  assert not (out / "gta5-train.json").exists()
  first = {p: (out / p).stat().st_mtime_ns for p in shard_files(out, "gta5-train")}
  # A temporary file of a killed run is removed, never read as a shard.
  stale = out / (shards.shard_name("gta5", "train", 2, 3) + f"{shards.TMP_MARKER}99999")
  stale.write_bytes(b"half a shard")

  with open(label, "wb") as f:
    f.write(good)
  manifest = write("gta5", mini.root, out, num_shards=3)
  assert not stale.exists()
  assert {p: (out / p).stat().st_mtime_ns for p in first} == first
  assert manifest["count"] == 3 and manifest["shard_lengths"] == [1, 1, 1]
  assert not (out / "gta5-train.progress.json").exists()
  datasets_records = datasets.read_records(str(out / "gta5-train-*.tfrecord"))
  assert sorted(datasets_records) == sorted(mini.expected)
  # The kept shards' statistics come from the progress file, the last one's from this run.
  assert_class_stats_count(str(out / "gta5-train-*.tfrecord"), mini.expected)


def test_shards_completed_without_per_record_counts_are_written_again(tmp_path):
  mini = datasets.write_gta5(str(tmp_path / "raw"))
  out = tmp_path / "out"
  label, good = _break_last_label(mini)
  with pytest.raises(BadFileError):
    write("gta5", mini.root, out, num_shards=3)
  with open(label, "wb") as f:
    f.write(good)
  # As a run before the counts were kept would have left it: shard 0 without "records".
  progress_file = out / "gta5-train.progress.json"
  progress = json.loads(progress_file.read_text())
  del progress["shards"]["0"]["records"]
  progress_file.write_text(json.dumps(progress))
  kept, redone = (out / shards.shard_name("gta5", "train", i, 3) for i in (1, 0))
  kept_mtime, redone_mtime = kept.stat().st_mtime_ns, redone.stat().st_mtime_ns
  write("gta5", mini.root, out, num_shards=3)
  assert kept.stat().st_mtime_ns == kept_mtime
  assert redone.stat().st_mtime_ns != redone_mtime
  assert_class_stats_count(str(out / "gta5-train-*.tfrecord"), mini.expected)


def test_complete_split_is_kept_changed_settings_need_overwrite(tmp_path):
  mini = datasets.write_gta5(str(tmp_path / "raw"))
  out = tmp_path / "out"
  write("gta5", mini.root, out, num_shards=1)
  shard = out / shards.shard_name("gta5", "train", 0, 1)
  mtime = shard.stat().st_mtime_ns
  write("gta5", mini.root, out, num_shards=1)
  assert shard.stat().st_mtime_ns == mtime
  with pytest.raises(FileExistsError, match="gta5-train.json.*--overwrite"):
    write("gta5", mini.root, out, num_shards=3)
  manifest = write("gta5", mini.root, out, num_shards=3, overwrite=True)
  assert manifest["num_shards"] == 3
  assert shard_files(out, "gta5-train") == [shards.shard_name("gta5", "train", i, 3)
                                            for i in range(3)]


def test_too_many_shards_is_an_error(tmp_path):
  mini = datasets.write_gta5(str(tmp_path / "raw"))
  with pytest.raises(ValueError, match="num_shards=4"):
    write("gta5", mini.root, tmp_path / "out", num_shards=4)


def test_parallel_workers_write_the_same_shards(tmp_path):
  mini = datasets.write_camvid(str(tmp_path / "raw"))
  write("camvid", mini.root, tmp_path / "serial", num_shards=2, num_workers=0)
  write("camvid", mini.root, tmp_path / "parallel", num_shards=2, num_workers=2)
  for name in shard_files(tmp_path / "serial", "camvid-train"):
    assert (tmp_path / "serial" / name).read_bytes() == (tmp_path / "parallel" / name).read_bytes()


def test_default_pool_is_skipped_for_a_small_split_and_an_explicit_one_is_kept(monkeypatch):
  monkeypatch.setattr(os, "cpu_count", lambda: 8)
  assert encoding_workers(None, 8) == 1
  assert encoding_workers(None, 33) == 2
  assert encoding_workers(None, 10_000) == 8
  assert encoding_workers(2, 8) == 2
  assert encoding_workers(4, 3) == 3


def test_resize_resamples_image_and_label(tmp_path):
  mini = datasets.write_gta5(str(tmp_path / "raw"))
  write("gta5", mini.root, tmp_path / "out", resize=(20, 10))
  records = datasets.read_records(str(tmp_path / "out" / "gta5-train-*.tfrecord"))
  for filename, expected in mini.expected.items():
    record = records[filename]
    assert record["format"] == "png" and record["image"].shape == (10, 20, 3)
    nearest = np.array(Image.fromarray(expected).resize((20, 10), Image.Resampling.NEAREST))
    np.testing.assert_array_equal(record["label"][..., 0], nearest)


def test_tfds_builder_from_directory_reads_the_shards(tmp_path):
  import tensorflow_datasets as tfds

  minis = datasets.write_voc(str(tmp_path / "voc"))
  out = tmp_path / "out"
  for split in ("train", "val"):
    write("voc", minis[split].root, out, split=split, num_shards=1)
  builder = tfds.builder_from_directory(str(out))
  assert set(builder.info.splits) == {"train", "val"}
  for split in ("train", "val"):
    examples = list(builder.as_dataset(split=split).as_numpy_iterator())
    assert len(examples) == len(minis[split].expected)
    for example in examples:
      image = example["image"]
      expected = minis[split].expected[image["filename"].decode()]
      np.testing.assert_array_equal(image["segmentation"]["class"]["encoded"][..., 0], expected)
      assert image["encoded"].shape == expected.shape + (3,)


def test_tfds_metadata_is_withheld_when_splits_disagree_on_labels(tmp_path):
  out = tmp_path / "out"
  write("cityscapes", datasets.write_cityscapes(str(tmp_path / "raw")).root, out)
  assert (out / "dataset_info.json").exists()
  write("cityscapes", datasets.write_cityscapes(str(tmp_path / "raw"), "test").root, out,
        split="test")
  assert not (out / "dataset_info.json").exists()
  assert (out / "cityscapes-train.json").exists() and (out / "cityscapes-test.json").exists()


def _ranks(names: list[str]) -> np.ndarray:
  """Position of each name in name order."""
  position = {name: i for i, name in enumerate(sorted(names))}
  return np.array([position[name] for name in names])


def test_pairs_are_permuted_with_the_recorded_seed_before_sharding(tmp_path):
  # The reference samples from a fully shuffled list; name-sorted shards would hold runs of
  # consecutive frames.
  mini = datasets.write_gta5(str(tmp_path / "raw"), sizes=[(8, 6)] * 120)
  manifest = write("gta5", mini.root, tmp_path / "out", num_shards=4)
  assert manifest["shuffle_seed"] == 0
  names = list(datasets.read_records(str(tmp_path / "out" / "gta5-train-*.tfrecord")))
  assert sorted(names) == sorted(mini.expected) and names != sorted(names)
  ranks = _ranks(names)
  assert abs(np.corrcoef(np.arange(len(ranks)), ranks)[0, 1]) < 0.2
  for shard in np.split(ranks, 4):  # every shard samples the whole split
    assert shard.min() < len(ranks) / 4 and shard.max() >= 3 * len(ranks) / 4


def test_same_seed_writes_the_same_shards(tmp_path):
  mini = datasets.write_gta5(str(tmp_path / "raw"), sizes=[(8, 6)] * 12)
  orders = {}
  for run, seed in (("a", 0), ("b", 0), ("c", 1), ("listed", None)):
    write("gta5", mini.root, tmp_path / run, num_shards=2, shuffle_seed=seed)
    orders[run] = list(datasets.read_records(str(tmp_path / run / "gta5-train-*.tfrecord")))
  for name in shard_files(tmp_path / "a", "gta5-train"):
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
  assert orders["a"] != orders["c"]
  assert orders["listed"] == sorted(orders["listed"])
  assert json.loads((tmp_path / "listed" / "gta5-train.json").read_text())["shuffle_seed"] is None
  with pytest.raises(FileExistsError, match="--overwrite"):  # a resume never mixes two orders
    write("gta5", mini.root, tmp_path / "a", num_shards=2, shuffle_seed=1)
