"""Shards against their manifest: the check before training and the checked reader."""

import json
import re

import pytest
import tensorflow as tf

from tests.helpers import datasets
from tfdaseg.data import integrity
from tfdaseg.data import pipeline
from tfdaseg.data.converters import CONVERTERS
from tfdaseg.data.tfrecord_writer import WriteOptions, write_split

NUM_FRAMES = 12
NUM_SHARDS = 3


@pytest.fixture
def split(tmp_path) -> dict:
  """Twelve tiny GTA5 frames converted by the real writer into three shards."""
  mini = datasets.write_gta5(str(tmp_path / "raw"), sizes=[(8, 6)] * NUM_FRAMES)
  out = tmp_path / "out"
  manifest = write_split(CONVERTERS.get("gta5")(mini.root), "gta5", "train", str(out),
                         WriteOptions(num_shards=NUM_SHARDS, num_workers=0))
  return {"pattern": str(out / "gta5-train-*.tfrecord"), "manifest": manifest,
          "manifest_file": out / "gta5-train.json",
          "shards": [out / name for name in manifest["shards"]]}


def _cut(path, num_bytes: int) -> None:
  """Drops the last `num_bytes` bytes of a file, as an interrupted copy does."""
  data = path.read_bytes()
  path.write_bytes(data[:-num_bytes])


def _edit_manifest(split: dict, **changes) -> None:
  manifest = {**split["manifest"], **changes}
  split["manifest_file"].write_text(json.dumps(manifest))


def _check_fails(split: dict, message: str) -> None:
  with pytest.raises(ValueError, match=message):
    integrity.check_shards(split["pattern"])


def test_an_intact_split_passes(split):
  integrity.check_shards(split["pattern"])
  counts = [integrity.count_records(str(path)) for path in split["shards"]]
  assert counts == split["manifest"]["shard_lengths"] and sum(counts) == NUM_FRAMES


def test_a_truncated_shard_is_named_by_its_size(split):
  _cut(split["shards"][1], 10)
  _check_fails(split, rf"1 of 3 shards .*\n{re.escape(str(split['shards'][1]))}: \d+ bytes, "
                      r"but \d+ were written: truncated")


def _last_record_size(path: str) -> int:
  """Bytes of the file's last record: its data plus a 12-byte header and a 4-byte CRC."""
  *_, last = tf.data.TFRecordDataset(path).as_numpy_iterator()
  return len(last) + 16


@pytest.mark.parametrize("cut, problem", [
    (lambda shard: 10,
     r"truncated: record 3 at offset \d+ needs \d+ bytes, the file ends after \d+"),
    (lambda shard: _last_record_size(shard) - 5,
     r"truncated: 5 bytes after record 3 at offset \d+, less than a record header"),
])
def test_truncation_is_found_from_record_boundaries(split, cut, problem):
  # A manifest without shard sizes (written before they were recorded): only the walk over
  # the record headers can tell.
  _edit_manifest(split, shard_num_bytes=None)
  shard = split["shards"][0]
  _cut(shard, cut(str(shard)))
  _check_fails(split, re.escape(str(shard)) + ": " + problem)


def test_a_corrupt_record_header_is_named(split):
  shard = split["shards"][2]
  data = bytearray(shard.read_bytes())
  data[3] ^= 0xFF  # in the first record's length
  shard.write_bytes(bytes(data))
  _check_fails(split, re.escape(str(shard)) + ": corrupt: the header of record 0 at offset 0 "
                                              "fails its checksum")


def test_counts_missing_and_foreign_shards_are_all_listed(split):
  lengths = list(split["manifest"]["shard_lengths"])
  lengths[0] += 1
  _edit_manifest(split, shard_lengths=lengths)
  split["shards"][2].unlink()
  _check_fails(split, "2 of 3 shards do not match their manifest")
  _check_fails(split, re.escape(str(split["shards"][0])) + r": 4 records, but its manifest "
                                                            "lists 5")
  _check_fails(split, re.escape(str(split["shards"][2])) + r": missing")
  foreign = split["shards"][0].with_name("gta5-train-00000-of-00005.tfrecord")
  foreign.write_bytes(split["shards"][1].read_bytes())
  _check_fails(split, r"gta5-train-00000-of-00005\.tfrecord: not a shard of .*gta5-train\.json")


@pytest.mark.parametrize("training", [True, False])
def test_reading_a_truncated_shard_fails_naming_it(split, training):
  shard = split["shards"][1]
  _cut(shard, 10)
  dataset = pipeline.make_dataset(split["pattern"], class_set="19", batch_size=1,
                                  training=training, seed=0)
  message = re.escape(str(shard)) + ": read 3 records, but its manifest lists 4"
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    for _ in dataset.take(3 * NUM_FRAMES):
      pass
