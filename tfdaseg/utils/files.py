"""Atomic file writes: a reader never sees a half-written file."""

import json
import os
from typing import Any

import tensorflow as tf


def atomic_write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` via a temporary name in the same folder, then renames it."""
  tmp = f"{path}.tmp-{os.getpid()}"
  with tf.io.gfile.GFile(tmp, "wb") as f:
    f.write(data)
  tf.io.gfile.rename(tmp, path, overwrite=True)


def atomic_write_json(path: str, obj: Any) -> None:
  """Writes `obj` as indented JSON to `path`, atomically."""
  atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: str) -> Any:
  """Reads a JSON file, naming the file in the error when it is missing or malformed."""
  try:
    with tf.io.gfile.GFile(path, "r") as f:
      return json.load(f)
  except tf.errors.NotFoundError:
    raise FileNotFoundError(f"{path}: no such file") from None
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from None
