"""Converted shards against their manifest: a check before training, a checked reader during it.

A shard cut short (a copy that did not finish, a full disk) otherwise fails hours into
training with TensorFlow's `DataLossError: truncated record at 4064`, which names no file.
`check_shards` finds it before the first step: it compares each shard's size with the one
the manifest recorded and walks its record boundaries (each record is a 12-byte header, the
data and a 4-byte CRC: `tensorflow/core/lib/io/record_writer.cc`), reading 12 bytes per
record and seeking over the data, so its cost is one small read per record whatever the
images' size. `read_shard` is the reader the input pipeline uses: it fails naming the shard
when a shard yields fewer or more records than its manifest lists.
"""

import dataclasses
import io
import os
import struct
from typing import BinaryIO, Iterator, Sequence

import tensorflow as tf

from tfdaseg.data import shards
from tfdaseg.utils.files import read_json

# A record starts with its length (uint64) and the masked CRC-32C of those 8 bytes (uint32)
# and ends with the masked CRC-32C of its data (uint32).
RECORD_HEADER_BYTES = 12
_FOOTER_BYTES = 4
_CRC_MASK_DELTA = 0xA282EAD8
_CASTAGNOLI = 0x82F63B78


def _crc32c_table() -> list[int]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ (_CASTAGNOLI if crc & 1 else 0)
    table.append(crc)
  return table


_CRC_TABLE = _crc32c_table()


def masked_crc32c(data: bytes) -> int:
  """The TFRecord checksum of `data`: CRC-32C, rotated right by 15 bits plus a constant."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  crc ^= 0xFFFFFFFF
  return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _CRC_MASK_DELTA) & 0xFFFFFFFF


@dataclasses.dataclass(frozen=True)
class ListedShard:
  """A shard file and what its manifest says about it.

  Args:
    path: The shard's path.
    records: Records the manifest lists for it.
    num_bytes: Its size when written, or None for manifests written before sizes were kept.
  """

  path: str
  records: int
  num_bytes: int | None


def listed_shards(files: Sequence[str]) -> list[ListedShard]:
  """Looks every file up in its split's manifest.

  Args:
    files: Shard paths (of one split or several).

  Returns:
    One `ListedShard` per file, in the order given.

  Raises:
    FileNotFoundError: when a manifest is missing.
    ValueError: naming a file its manifest does not list (a shard of another conversion).
  """
  manifests = {}
  listed = []
  for path in files:
    manifest_file = shards.manifest_path_for_shard(path)
    if manifest_file not in manifests:
      manifests[manifest_file] = read_json(manifest_file)
    manifest = manifests[manifest_file]
    name = os.path.basename(path)
    if name not in manifest["shards"]:
      raise ValueError(f"{path}: not a shard of {manifest_file} (which lists "
                       f"{manifest['num_shards']} shards): left by another conversion?")
    index = manifest["shards"].index(name)
    sizes = manifest.get("shard_num_bytes")
    listed.append(ListedShard(path, manifest["shard_lengths"][index],
                              sizes[index] if sizes else None))
  return listed


def open_unbuffered(path: str) -> BinaryIO:
  """Opens a file for small reads at many offsets.

  A local file is read without a buffer: tf.io.gfile refills its 512 KiB buffer after every
  seek, which would read a fifth of a 2.3 MB GTA5 record to get its 12-byte header. Other
  file systems (gs://, ...) go through tf.io.gfile, at that cost.
  """
  if "://" in path:
    return tf.io.gfile.GFile(path, "rb")
  return io.FileIO(path, "rb")


def record_spans(path: str) -> Iterator[tuple[int, int]]:
  """The (byte offset, data length) of each record of a TFRecord file, from its headers alone.

  Args:
    path: The file.

  Yields:
    (offset of the record's header, length of its data), in file order.

  Raises:
    ValueError: naming the file and the byte offset where it is truncated or a record
      header is corrupt.
  """
  size = tf.io.gfile.stat(path).length
  count, offset = 0, 0
  with open_unbuffered(path) as f:
    while offset < size:
      if size - offset < RECORD_HEADER_BYTES:
        raise ValueError(f"{path}: truncated: {size - offset} bytes after record {count} at "
                         f"offset {offset}, less than a record header")
      f.seek(offset)
      header = f.read(RECORD_HEADER_BYTES)
      length_bytes, crc = header[:8], struct.unpack("<I", header[8:])[0]
      if masked_crc32c(length_bytes) != crc:
        raise ValueError(f"{path}: corrupt: the header of record {count} at offset {offset} "
                         "fails its checksum")
      length = struct.unpack("<Q", length_bytes)[0]
      end = offset + RECORD_HEADER_BYTES + length + _FOOTER_BYTES
      if end > size:
        raise ValueError(f"{path}: truncated: record {count} at offset {offset} needs "
                         f"{end - offset} bytes, the file ends after {size - offset}")
      yield offset, length
      count, offset = count + 1, end


def count_records(path: str) -> int:
  """Counts a TFRecord file's records from their headers, without reading their data.

  Raises:
    ValueError: as `record_spans`.
  """
  return sum(1 for _ in record_spans(path))


def read_record(path: str, offset: int, length: int) -> bytes:
  """The data of the record whose header is at `offset` (a span of `record_spans`).

  Raises:
    ValueError: naming the file, when it ends before the record does.
  """
  with open_unbuffered(path) as f:
    f.seek(offset + RECORD_HEADER_BYTES)
    data = f.read(length)
  if len(data) != length:
    raise ValueError(f"{path}: truncated record at offset {offset}")
  return data


def _shard_problem(shard: ListedShard) -> str | None:
  """What is wrong with one shard, or None."""
  if not tf.io.gfile.exists(shard.path):
    return f"{shard.path}: missing (its manifest lists {shard.records} records in it)"
  size = tf.io.gfile.stat(shard.path).length
  if shard.num_bytes is not None and size != shard.num_bytes:
    return (f"{shard.path}: {size} bytes, but {shard.num_bytes} were written: "
            f"{'truncated' if size < shard.num_bytes else 'replaced or appended to'}")
  try:
    count = count_records(shard.path)
  except ValueError as e:
    return str(e)
  if count != shard.records:
    return f"{shard.path}: {count} records, but its manifest lists {shard.records}"
  return None


def check_shards(file_pattern: str | Sequence[str]) -> None:
  """Checks the shards a pattern matches, and the rest of their splits, against the manifests.

  Every shard a matched split's manifest lists must exist, have the size it was written with
  (where the manifest records it) and hold the number of records the manifest lists, each
  record's header intact. Record data is not read: its checksum is checked when training
  reads it (`read_shard`). Costs one 12-byte read per record: on a local disk about 12 µs
  per record from the page cache (0.3 s for GTA5's 25k records), one 4 KiB page read per
  record when not cached (seconds on an SSD); remote file systems read 512 KiB per record.

  Args:
    file_pattern: Glob of shards (or a list of globs), as given to `make_dataset`.

  Raises:
    FileNotFoundError: when nothing matches or a manifest is missing.
    ValueError: listing every shard that is missing, truncated, corrupt, of another
      conversion or of the wrong record count, one line each, naming the file.
  """
  matched = listed_shards(shards.match_files(file_pattern))
  folders = {os.path.dirname(s.path): shards.manifest_path_for_shard(s.path) for s in matched}
  everything = {s.path: s for s in matched}
  for folder, manifest_file in sorted(folders.items()):
    manifest = read_json(manifest_file)
    for name, records, num_bytes in zip(manifest["shards"], manifest["shard_lengths"],
                                        manifest.get("shard_num_bytes") or
                                        [None] * len(manifest["shards"])):
      path = os.path.join(folder, name)
      everything.setdefault(path, ListedShard(path, records, num_bytes))
  problems = [p for p in map(_shard_problem, everything.values()) if p is not None]
  if problems:
    raise ValueError(f"{len(problems)} of {len(everything)} shards do not match their "
                     "manifest (convert the split again, or copy it again):\n" +
                     "\n".join(problems))


def read_shard(path: tf.Tensor, records: tf.Tensor) -> tf.data.Dataset:
  """The records of one shard; fails naming the shard if it yields other than `records`.

  TFRecordDataset's own errors name no file, so its errors end the shard (logged as a
  warning with the original message) and a final count check raises `InvalidArgumentError`
  with the path.

  Args:
    path: Scalar string tensor, the shard.
    records: Scalar int64 tensor, the records its manifest lists.

  Returns:
    A dataset of serialized records.
  """
  flagged = tf.data.TFRecordDataset(path).ignore_errors(log_warning=True).map(
      lambda record: (record, False))
  flagged = flagged.concatenate(tf.data.Dataset.from_tensors((tf.constant(""), True)))

  def count(seen: tf.Tensor, element: tuple[tf.Tensor, tf.Tensor]):
    record, last = element
    message = tf.strings.join([
        path, ": read ", tf.strings.as_string(seen), " records, but its manifest lists ",
        tf.strings.as_string(records), ": the shard is truncated or corrupt (see the warning "
        "above; tfdaseg.data.integrity.check_shards checks a whole split)"])
    check = tf.debugging.Assert(tf.logical_or(tf.logical_not(last), tf.equal(seen, records)),
                                [message])
    with tf.control_dependencies([check]):
      return seen + 1, (record, last)

  counted = flagged.scan(tf.constant(0, tf.int64), count)
  return counted.filter(lambda record, last: tf.logical_not(last)).map(
      lambda record, last: record)
