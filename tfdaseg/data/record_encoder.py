"""Turns one source (image, label) pair into a serialized TFRecord example, with its statistics.

This is the per-image work of a conversion, run in worker processes by the TFRecord writer:
validation (readable image, label size = image size, storage ids in range), optional resizing,
label PNG encoding and pixel counting.
"""

import dataclasses
import io

import numpy as np
from PIL import Image

from tfdaseg.data import labels
from tfdaseg.data import schema
from tfdaseg.data.converters.base import BadFileError, Converter, SourcePair
from tfdaseg.data.converters.base import read_bytes, source_name

_MAGIC_FORMATS = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"))


@dataclasses.dataclass(frozen=True)
class EncodedExample:
  """A converted pair.

  Args:
    filename: The pair's `SourcePair.filename`.
    serialized: The serialized `tf.train.Example`.
    class_pixels: int64 [num storage classes + 1]: pixels per storage class, then ignored
      pixels; all zero for unlabelled pairs.
  """

  filename: str
  serialized: bytes
  class_pixels: np.ndarray


@dataclasses.dataclass(frozen=True)
class SkippedPair:
  """A pair left out because of a bad file (`--skip_bad`)."""

  filename: str
  reason: str


def image_format(data: bytes, source: str | bytes) -> str:
  """Returns "png" or "jpeg" from an encoded image's leading bytes.

  Raises:
    BadFileError: for anything else.
  """
  for magic, name in _MAGIC_FORMATS:
    if data.startswith(magic):
      return name
  raise BadFileError(source_name(source), "not a PNG or JPEG file")


def encode_png(array: np.ndarray) -> bytes:
  """Encodes a uint8 [H, W] (grey, e.g. storage ids) or [H, W, 3] (RGB) array as PNG."""
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()


def _open_image(data: bytes, source: str | bytes) -> Image.Image:
  try:
    image = Image.open(io.BytesIO(data))
    image.verify()  # Checks the file's structure without decoding all pixels.
  except Exception as e:  # PIL raises many exception types for corrupt files.
    raise BadFileError(source_name(source), f"cannot decode image ({e})") from None
  # verify() leaves the object unusable; reopen for size and pixels.
  return Image.open(io.BytesIO(data))


def _count_pixels(label: np.ndarray, num_classes: int, source: str | bytes) -> np.ndarray:
  counts = np.bincount(label.ravel(), minlength=256).astype(np.int64)
  if counts[num_classes:labels.IGNORE_ID].any():
    bad = np.nonzero(counts[num_classes:labels.IGNORE_ID])[0] + num_classes
    raise BadFileError(source_name(source),
                       f"storage ids {bad.tolist()} are outside 0..{num_classes - 1} and "
                       f"{labels.IGNORE_ID}")
  return np.concatenate([counts[:num_classes], counts[labels.IGNORE_ID:]])


def encode_pair(converter: Converter, pair: SourcePair,
                resize: tuple[int, int] | None = None) -> EncodedExample:
  """Validates and encodes one pair.

  Args:
    converter: The dataset's converter (reads the label into storage ids).
    pair: The image and label to convert.
    resize: (width, height) to resize to (image bicubic and re-encoded as PNG, label nearest),
      or None to store the image bytes exactly as they are on disk.

  Returns:
    The encoded example and its pixel counts.

  Raises:
    BadFileError: naming the file when it is unreadable, the sizes differ or ids are invalid.
  """
  data = read_bytes(pair.image)
  fmt = image_format(data, pair.image)
  image = _open_image(data, pair.image)
  width, height = image.size
  num_classes = len(converter.storage_classes)
  label = None
  class_pixels = np.zeros((num_classes + 1,), np.int64)
  if pair.label is not None:
    label = converter.read_label(pair.label)
    if label.shape != (height, width):
      raise BadFileError(
          source_name(pair.label),
          f"label is {label.shape[1]}x{label.shape[0]} but image {source_name(pair.image)} "
          f"is {width}x{height}")
  if resize is not None:
    width, height = resize
    # BICUBIC: the reference loaders' filter.
    rgb = image.convert("RGB").resize(resize, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    rgb.save(buffer, format="PNG")
    data, fmt = buffer.getvalue(), "png"
    if label is not None:
      label = np.asarray(Image.fromarray(label).resize(resize, Image.Resampling.NEAREST))
  label_png = None
  class_ids = None
  if label is not None:
    class_pixels = _count_pixels(label, num_classes, pair.label)
    label_png = encode_png(label)
    if converter.class_labels:
      class_ids = np.nonzero(class_pixels[:num_classes])[0].tolist()
  example = schema.make_example(data, fmt, height, width, pair.filename, label_png, class_ids)
  # Deterministic: map fields in a fixed order, so shards are identical whichever process
  # wrote them.
  return EncodedExample(pair.filename, example.SerializeToString(deterministic=True), class_pixels)


# Worker-process state, set once per process by `init_worker` (a ProcessPoolExecutor initializer).
_worker_state: dict = {}


def init_worker(converter: Converter, resize: tuple[int, int] | None, skip_bad: bool) -> None:
  """Stores what every task of a conversion shares in the worker process."""
  _worker_state.update(converter=converter, resize=resize, skip_bad=skip_bad)


def encode_or_skip(pair: SourcePair) -> EncodedExample | SkippedPair:
  """Encodes `pair` with the worker's settings; bad files become `SkippedPair` with skip_bad."""
  try:
    return encode_pair(_worker_state["converter"], pair, _worker_state["resize"])
  except BadFileError as e:
    if not _worker_state["skip_bad"]:
      raise
    return SkippedPair(pair.filename, str(e))
