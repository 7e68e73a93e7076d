"""Writes one split of a dataset as sharded TFRecords plus a manifest, in parallel and resumably.

The shared half of every conversion (a converter only lists pairs and reads labels):
  * pairs are permuted with a seed (`WriteOptions.shuffle_seed`, recorded in the manifest)
    before sharding, so that no shard holds a run of name-sorted neighbours (consecutive GTA5
    frames, one Cityscapes city): the reference samples from a fully shuffled list (AdaptSegNet
    train_gta2cityscapes_multi.py: `data.DataLoader(..., shuffle=True)`), while a reader of
    name-sorted shards sees runs of neighbours for hundreds of steps;
  * pairs are encoded in worker processes (`num_workers`), results written in that order;
  * shard i holds the (permuted) pairs [i*n/N, (i+1)*n/N) and is written under a temporary
    name, then renamed: a file with a shard's name is always complete;
  * after every shard, `{dataset}-{split}.progress.json` records its statistics (with each
    record's span and the encoder's pixel counts of its label), so a re-run skips completed
    shards; an interrupted run's temporary files are deleted on the next run;
  * a labelled split's per-image class statistics (`tfdaseg.data.class_stats`, for rare class
    sampling) are written from those counts, so every label is decoded once; then the manifest
    `{dataset}-{split}.json` (count, shards with their record counts and sizes, class space,
    per-class pixel counts, skipped files, shuffle seed), atomically, and the folder's TFDS
    metadata.
"""

import concurrent.futures
import collections
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import time
from typing import Callable, Iterable, Iterator, Sequence

from absl import logging
import numpy as np
import tensorflow as tf
import tqdm

from tfdaseg.data import class_stats, integrity, record_encoder
from tfdaseg.data import shards
from tfdaseg.data import tfds_metadata
from tfdaseg.data.converters.base import Converter, SourcePair
from tfdaseg.utils.files import atomic_write_json, read_json

# Shards of about this size read efficiently and spread well over input workers.
TARGET_SHARD_BYTES = 128 << 20
# Assumed size of an image whose size cannot be seen (a source that is not a file).
_FALLBACK_IMAGE_BYTES = 2 << 20
# Pairs a default-sized pool needs per worker before a worker process pays for its start.
_MIN_PAIRS_PER_DEFAULT_WORKER = 32

# Pairs in flight per worker: keeps workers busy without buffering a whole dataset.
_PAIRS_PER_WORKER_IN_FLIGHT = 4


@dataclasses.dataclass(frozen=True)
class WriteOptions:
  """How to write a split.

  Args:
    num_shards: Number of shards; None picks about TARGET_SHARD_BYTES per shard.
    num_workers: Encoding processes; None = one per CPU (fewer for a split of under 32 pairs per
      CPU), 0 or 1 = encode in this process.
    overwrite: Delete an existing conversion of the split first (else it is kept / resumed).
    skip_bad: Skip (and list in the manifest) bad files instead of stopping at the first.
    resize: (width, height) to resize every image and label to, or None to keep them.
    shuffle_seed: Seed of the permutation of the pairs before sharding; None writes them in
      listing order. Sources read in runs (`Converter.random_access` False) are always written
      in listing order.
  """

  num_shards: int | None = None
  num_workers: int | None = None
  overwrite: bool = False
  skip_bad: bool = False
  resize: tuple[int, int] | None = None
  shuffle_seed: int | None = 0


def shuffle_pairs(pairs: Sequence[SourcePair], seed: int | None) -> list[SourcePair]:
  """Returns the pairs in the order they are written: permuted by `seed`, or as listed if None.

  The permutation is numpy's `default_rng(seed)` (PCG64), the same on every platform. A numpy
  release may change it (NEP 19); the fingerprint holds the order, so a resume would notice.
  """
  if seed is None:
    return list(pairs)
  return [pairs[i] for i in np.random.default_rng(seed).permutation(len(pairs))]


def default_num_shards(pairs: Sequence[SourcePair]) -> int:
  """Picks a shard count giving about TARGET_SHARD_BYTES per shard (estimated from a sample)."""
  sample = pairs[:: max(1, len(pairs) // 100)]
  sizes = [os.path.getsize(p.image) for p in sample
           if isinstance(p.image, str) and os.path.isfile(p.image)]
  per_image = np.mean(sizes) if sizes else _FALLBACK_IMAGE_BYTES
  return int(min(len(pairs), max(1, math.ceil(per_image * len(pairs) / TARGET_SHARD_BYTES))))


def _fingerprint(converter: Converter, dataset: str, split: str, pairs: Sequence[SourcePair],
                 num_shards: int, resize: tuple[int, int] | None, seed: int | None) -> str:
  """Identifies what a conversion writes, so a resume never mixes two different conversions."""
  key = {
      "dataset": dataset, "split": split, "data_dir": converter.data_dir,
      "storage": converter.storage, "num_shards": num_shards, "shuffle_seed": seed,
      "resize": list(resize) if resize else None, "options": dataclasses.asdict(converter.options),
      "pairs": [(p.filename, p.label is not None) for p in pairs],
  }
  return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _ordered_map(fn: Callable, items: Iterable, pool: concurrent.futures.Executor | None,
                 window: int) -> Iterator:
  """Like `map(fn, items)`, with at most `window` items in flight on `pool` (None: inline)."""
  if pool is None:
    yield from map(fn, items)
    return
  pending = collections.deque()
  for item in items:
    pending.append(pool.submit(fn, item))
    if len(pending) >= window:
      yield pending.popleft().result()
  while pending:
    yield pending.popleft().result()


class _ShardStats:
  """Counts of one shard, as stored in the progress file and summed into the manifest."""

  def __init__(self, num_classes: int):
    self.count = 0
    self.class_pixels = np.zeros((num_classes + 1,), np.int64)
    self.skipped: list[dict] = []
    # [byte offset, byte length, {storage id: pixels}] per record: class_stats' entries.
    self.records: list[list] = []

  def to_json(self, num_bytes: int) -> dict:
    return {"count": self.count, "num_bytes": num_bytes,
            "class_pixels": self.class_pixels.tolist(), "skipped": self.skipped,
            "records": self.records}


def _write_shard(path: str, results: Iterator, count: int, stats: _ShardStats,
                 bar: tqdm.tqdm) -> int:
  """Writes the next `count` results to `path` atomically; returns the shard's size in bytes."""
  tmp = f"{path}{shards.TMP_MARKER}{os.getpid()}"
  written = []  # (data length, pixels) per record
  try:
    with tf.io.TFRecordWriter(tmp) as writer:
      for _ in range(count):
        result = next(results)
        if isinstance(result, record_encoder.SkippedPair):
          logging.warning("skipping %s", result.reason)
          stats.skipped.append({"filename": result.filename, "reason": result.reason})
        else:
          writer.write(result.serialized)
          stats.count += 1
          stats.class_pixels += result.class_pixels
          written.append((len(result.serialized), class_stats.record_pixels(result.class_pixels)))
        bar.update(1)
    # The offsets from the written headers (no record data is read), as the sampler reads them.
    spans = list(integrity.record_spans(tmp))
    if [length for _, length in spans] != [length for length, _ in written]:
      raise RuntimeError(f"{tmp}: the records written are not the records encoded")
    stats.records = [[offset, length, pixels]
                     for (offset, length), (_, pixels) in zip(spans, written)]
    tf.io.gfile.rename(tmp, path, overwrite=True)
  finally:
    if tf.io.gfile.exists(tmp):
      tf.io.gfile.remove(tmp)
  return tf.io.gfile.stat(path).length


def _remove_split(output_dir: str, dataset: str, split: str) -> None:
  paths = tf.io.gfile.glob(shards.shard_glob(output_dir, dataset, split))
  manifest_file = shards.manifest_path(output_dir, dataset, split)
  paths += [manifest_file, shards.progress_path(output_dir, dataset, split),
            class_stats.class_stats_path(manifest_file)]
  for path in paths:
    if tf.io.gfile.exists(path):
      tf.io.gfile.remove(path)


def _completed_shards(output_dir: str, dataset: str, split: str, fingerprint: str,
                      names: list[str]) -> dict[int, dict]:
  """Returns {shard index: stats} of shards a previous run of the same conversion completed.

  Raises:
    FileExistsError: when the folder holds shards of a different conversion of this split.
  """
  progress_file = shards.progress_path(output_dir, dataset, split)
  progress = read_json(progress_file) if tf.io.gfile.exists(progress_file) else None
  existing = {os.path.basename(p) for p in tf.io.gfile.glob(
      shards.shard_glob(output_dir, dataset, split))}
  if progress is not None and progress["fingerprint"] != fingerprint:
    raise FileExistsError(f"{progress_file}: an unfinished conversion of {dataset}-{split} with "
                          "other settings or files is in the folder; pass --overwrite to "
                          "replace it")
  foreign = existing - set(names)
  if foreign:
    raise FileExistsError(f"{output_dir}: holds shards {sorted(foreign)[:3]} of another "
                          f"conversion of {dataset}-{split}; pass --overwrite to replace them")
  done = {} if progress is None else {int(i): s for i, s in progress["shards"].items()}
  # A shard without recorded statistics (or a record without its shard) is written again, as
  # is one a run before per-record counts were kept completed.
  return {i: s for i, s in done.items() if names[i] in existing and "records" in s}


def _manifest(converter: Converter, dataset: str, split: str, names: list[str],
              done: dict[int, dict], fingerprint: str, options: WriteOptions,
              labelled: bool, seed: int | None) -> dict:
  num_classes = len(converter.storage_classes)
  class_pixels = np.zeros((num_classes + 1,), np.int64)
  skipped = []
  for i in range(len(names)):
    class_pixels += np.asarray(done[i]["class_pixels"], np.int64)
    skipped += done[i]["skipped"]
  return {
      "format": shards.MANIFEST_FORMAT,
      "dataset": dataset,
      "split": split,
      "data_dir": converter.data_dir,
      "class_space": converter.storage,
      "class_names": list(converter.storage_classes),
      "labelled": labelled,
      "class_labels": labelled and converter.class_labels,
      "count": sum(done[i]["count"] for i in range(len(names))),
      "num_shards": len(names),
      "shards": names,
      "shard_lengths": [done[i]["count"] for i in range(len(names))],
      # Per shard, so that a truncated or replaced shard is found by its size alone.
      "shard_num_bytes": [done[i]["num_bytes"] for i in range(len(names))],
      "num_bytes": sum(done[i]["num_bytes"] for i in range(len(names))),
      "class_pixel_counts": class_pixels[:num_classes].tolist(),
      "ignore_pixel_count": int(class_pixels[num_classes]),
      "skipped": skipped,
      "skipped_count": len(skipped),
      "resize": list(options.resize) if options.resize else None,
      "shuffle_seed": seed,
      "options": dataclasses.asdict(converter.options),
      "fingerprint": fingerprint,
  }


def _worker_context() -> multiprocessing.context.BaseContext:
  """Where worker processes come from.

  Not plain fork(): the parent may have TensorFlow's threads running, which fork() does not
  copy safely. A fork server is a fresh process that imports the encoder (and so TensorFlow)
  once and forks workers from there, so each pool starts in well under a second after the
  first; spawn (a fresh import per worker) is the fallback where fork servers do not exist.
  """
  if "forkserver" in multiprocessing.get_all_start_methods():
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([record_encoder.__name__])
    return context
  return multiprocessing.get_context("spawn")


def encoding_workers(num_workers: int | None, num_pairs: int) -> int:
  """How many processes encode a split.

  Args:
    num_workers: The user's choice (`WriteOptions.num_workers`), None for the default.
    num_pairs: Pairs left to encode.

  Returns:
    The number of workers; 1 or fewer means encoding in this process.
  """
  if num_workers is None:
    # Starting a pool costs seconds (TensorFlow is imported once per pool), more than encoding a
    # few images takes, so a small split gets one worker per _MIN_PAIRS_PER_DEFAULT_WORKER pairs.
    return min(os.cpu_count() or 1, -(-num_pairs // _MIN_PAIRS_PER_DEFAULT_WORKER))
  return min(num_workers, num_pairs)


def _executor(converter: Converter, options: WriteOptions,
              num_pairs: int) -> tuple[concurrent.futures.Executor | None, int]:
  """Returns (worker pool or None to encode in this process, number of workers)."""
  workers = encoding_workers(options.num_workers, num_pairs)
  record_encoder.init_worker(converter, options.resize, options.skip_bad)
  if workers <= 1:
    return None, 1
  pool = concurrent.futures.ProcessPoolExecutor(
      max_workers=workers, mp_context=_worker_context(),
      initializer=record_encoder.init_worker,
      initargs=(converter, options.resize, options.skip_bad))
  return pool, workers


def write_split(converter: Converter, dataset: str, split: str, output_dir: str,
                options: WriteOptions = WriteOptions()) -> dict:
  """Converts one split of a dataset (resuming a previous run of the same conversion).

  Args:
    converter: Lists the split's pairs and reads its labels.
    dataset: The dataset's name in file names (the converter's registry name).
    split: The split to convert.
    output_dir: Folder for the shards, the manifest and the TFDS metadata.
    options: Sharding, parallelism and error handling.

  Returns:
    The manifest (also written to `{output_dir}/{dataset}-{split}.json`).

  Raises:
    BadFileError: for a bad file, unless `options.skip_bad`.
    FileExistsError: when `output_dir` holds a different conversion of the split and
      `options.overwrite` is not set.
    ValueError: when the split has no images or fewer images than shards.
  """
  seed = options.shuffle_seed if converter.random_access else None
  pairs = shuffle_pairs(converter.list_pairs(split), seed)
  if not pairs:
    raise ValueError(f"{converter.data_dir}: no images for split {split!r} of {dataset}")
  num_shards = options.num_shards or default_num_shards(pairs)
  if not 1 <= num_shards <= len(pairs):
    raise ValueError(f"num_shards={num_shards} must be between 1 and the number of images "
                     f"({len(pairs)})")
  labelled = pairs[0].label is not None
  names = [shards.shard_name(dataset, split, i, num_shards) for i in range(num_shards)]
  fingerprint = _fingerprint(converter, dataset, split, pairs, num_shards, options.resize, seed)
  tf.io.gfile.makedirs(output_dir)
  if options.overwrite:
    _remove_split(output_dir, dataset, split)
  for path in shards.remove_stale_temporaries(output_dir, dataset, split):
    logging.info("removed %s, left by an interrupted run", path)

  manifest_file = shards.manifest_path(output_dir, dataset, split)
  if tf.io.gfile.exists(manifest_file):
    manifest = read_json(manifest_file)
    complete = all(tf.io.gfile.exists(os.path.join(output_dir, n)) for n in names)
    if manifest.get("fingerprint") == fingerprint and complete:
      logging.info("%s is complete; kept (pass --overwrite to convert again)", manifest_file)
      tfds_metadata.write_tfds_metadata(output_dir)
      return manifest
    raise FileExistsError(f"{manifest_file}: {dataset}-{split} was converted with other settings "
                          "or files (or shards are missing); pass --overwrite to replace it")

  done = _completed_shards(output_dir, dataset, split, fingerprint, names)
  bounds = [i * len(pairs) // num_shards for i in range(num_shards + 1)]
  todo = [i for i in range(num_shards) if i not in done]
  if done:
    logging.info("resuming %s-%s: %d of %d shards already complete", dataset, split,
                 len(done), num_shards)

  def todo_pairs() -> Iterator[SourcePair]:
    for i in todo:
      yield from converter.fetch(list(pairs[bounds[i]:bounds[i + 1]]))

  num_classes = len(converter.storage_classes)
  progress_file = shards.progress_path(output_dir, dataset, split)
  pool, workers = _executor(converter, options, sum(bounds[i + 1] - bounds[i] for i in todo))
  start = time.monotonic()
  already = len(pairs) - sum(bounds[i + 1] - bounds[i] for i in todo)
  try:
    results = _ordered_map(record_encoder.encode_or_skip, todo_pairs(), pool,
                           workers * _PAIRS_PER_WORKER_IN_FLIGHT)
    with tqdm.tqdm(total=len(pairs), initial=already, unit="img", desc=f"{dataset}-{split}",
                   mininterval=1.0) as bar:
      for i in todo:
        stats = _ShardStats(num_classes)
        num_bytes = _write_shard(os.path.join(output_dir, names[i]), results,
                                 bounds[i + 1] - bounds[i], stats, bar)
        done[i] = stats.to_json(num_bytes)
        atomic_write_json(progress_file, {"fingerprint": fingerprint, "shards": done})
  finally:
    if pool is not None:
      pool.shutdown(wait=True, cancel_futures=True)

  manifest = _manifest(converter, dataset, split, names, done, fingerprint, options, labelled,
                       seed)
  if labelled:
    # Before the manifest: a complete manifest on disk always has its statistics.
    class_stats.write_class_stats(manifest_file, manifest, [
        [i, *record] for i in range(num_shards) for record in done[i]["records"]])
  atomic_write_json(manifest_file, manifest)
  tf.io.gfile.remove(progress_file)
  elapsed = time.monotonic() - start
  converted = len(pairs) - already
  logging.info("%s: %d images in %d shards (%d skipped); %d converted in %.1f s (%.1f images/s, "
               "%d workers)", manifest_file, manifest["count"], num_shards,
               manifest["skipped_count"], converted, elapsed, converted / max(elapsed, 1e-9),
               workers)
  if not tfds_metadata.write_tfds_metadata(output_dir):
    logging.info("%s: no TFDS metadata (see the warning above)", output_dir)
  return manifest
