"""What a dataset converter is: it lists (image, label) pairs and reads labels into storage ids.

Everything else (validation, resizing, encoding, sharding, parallelism, manifests) is the shared
writer's job (tfdaseg/data/tfrecord_writer.py), so a converter module stays a page long.
"""

import abc
import dataclasses
import io
import os
from typing import ClassVar, Mapping

import numpy as np
from PIL import Image

from tfdaseg.data import labels


class BadFileError(ValueError):
  """A source file that cannot be converted; `--skip_bad` skips these instead of stopping.

  Args:
    path: The offending file.
    problem: What is wrong with it.
  """

  def __init__(self, path: str, problem: str):
    # Both go to `args` so that the error survives pickling from a worker process.
    super().__init__(path, problem)
    self.path = path
    self.problem = problem

  def __str__(self) -> str:
    return f"{self.path}: {self.problem}"


@dataclasses.dataclass(frozen=True)
class SourcePair:
  """One image and its label, as a dataset stores them.

  Args:
    filename: The image's name relative to the dataset root, recorded in `image/filename`.
    image: Path of the encoded image, or its bytes for sources that are not files.
    label: Path (or bytes) of the label, or None for an unlabelled image.
  """

  filename: str
  image: str | bytes
  label: str | bytes | None


@dataclasses.dataclass(frozen=True)
class ConverterOptions:
  """Dataset-specific settings; each converter reads the ones it knows.

  Args:
    list_file: Optional file of image names (one per line) selecting a subset.
    unlabeled: Write images only, even where labels exist.
    camvid_colour_labels: CamVid labels are the original 32-colour RGB images.
    sbd_dir: Folder of the SBD release (VOC `trainaug`).
    label_map: JSON file mapping raw ids to storage ids (the `folder` dataset).
  """

  list_file: str | None = None
  unlabeled: bool = False
  camvid_colour_labels: bool = False
  sbd_dir: str | None = None
  label_map: str | None = None


class Converter(abc.ABC):
  """Reads one dataset's on-disk layout.

  Args:
    data_dir: The dataset's root folder.
    options: Dataset-specific settings.

  Subclasses set `storage` (the storage space their labels are written in) and may set
  `unlabelled_splits` (splits that ship without labels), `class_labels` (also record the
  set of classes present as `image/class/label`) and `random_access` (False for sources read
  in runs by `fetch`, which the writer then keeps in listing order). They must be picklable:
  the writer sends them to worker processes.
  """

  storage: ClassVar[str] = "cityscapes19"
  unlabelled_splits: ClassVar[tuple[str, ...]] = ()
  class_labels: ClassVar[bool] = False
  random_access: ClassVar[bool] = True

  def __init__(self, data_dir: str, options: ConverterOptions = ConverterOptions()):
    self.data_dir = data_dir
    self.options = options

  @abc.abstractmethod
  def list_pairs(self, split: str) -> list[SourcePair]:
    """Returns the split's pairs in a fixed order (labels None where `labelled` is False).

    Raises:
      FileNotFoundError: naming the expected folder when the layout is not there.
    """

  @abc.abstractmethod
  def read_label(self, label: str | bytes) -> np.ndarray:
    """Reads a label into storage ids.

    Args:
      label: A `SourcePair.label`.

    Returns:
      uint8 [H, W] storage ids, IGNORE_ID where unlabelled.

    Raises:
      BadFileError: when the file is unreadable or holds ids outside the dataset's range.
    """

  def fetch(self, pairs: list[SourcePair]) -> list[SourcePair]:
    """Returns `pairs` ready for encoding (file paths need nothing).

    Sources that are not files override this to load a run of consecutive pairs' bytes in one
    pass; the writer calls it with one shard's pairs at a time.
    """
    return pairs

  @property
  def storage_classes(self) -> tuple[str, ...]:
    """The class names of this converter's storage space."""
    return labels.STORAGE_CLASSES[self.storage]

  def labelled(self, split: str) -> bool:
    """Whether pairs of `split` carry labels."""
    return not self.options.unlabeled and split not in self.unlabelled_splits

  def require_dir(self, *parts: str, layout: str) -> str:
    """Returns `data_dir/parts...`, or raises naming the missing folder and the layout expected.

    Args:
      *parts: Path components below `data_dir`.
      layout: A one-line description of the expected layout, for the error message.
    """
    path = os.path.join(self.data_dir, *parts)
    if not os.path.isdir(path):
      raise FileNotFoundError(f"{path}: missing folder; expected {layout} under {self.data_dir}")
    return path

  def selected_stems(self) -> set[str] | None:
    """Stems named in `--list_file` (lines like `00001.png` or `00001`), or None for all."""
    if self.options.list_file is None:
      return None
    try:
      with open(self.options.list_file) as f:
        lines = [line.strip() for line in f]
    except OSError as e:
      raise FileNotFoundError(f"{self.options.list_file}: cannot read list file ({e})") from None
    return {os.path.splitext(os.path.basename(line))[0] for line in lines if line}

  def pairs_by_stem(self, image_dir: str, label_dir: str | None,
                    image_exts: tuple[str, ...] = (".png",),
                    label_suffix: str = ".png") -> list[SourcePair]:
    """Pairs `image_dir/<stem><ext>` with `label_dir/<stem><label_suffix>`, sorted by stem.

    A `--list_file` restricts the stems; a listed stem without an image still yields a pair, so
    that the writer reports (or with `--skip_bad` skips) the missing file by name.

    Args:
      image_dir: Folder of images.
      label_dir: Folder of labels, or None for unlabelled pairs.
      image_exts: Image file extensions to accept (lower case).
      label_suffix: What follows the stem in a label file name.
    """
    found = {}
    for name in os.listdir(image_dir):
      stem, ext = os.path.splitext(name)
      if ext.lower() in image_exts:
        found[stem] = name
    if not found:
      raise FileNotFoundError(f"{image_dir}: no images ({', '.join(image_exts)}) in the folder")
    selected = self.selected_stems()
    stems = sorted(found if selected is None else selected)
    pairs = []
    for stem in stems:
      image = os.path.join(image_dir, found.get(stem, stem + image_exts[0]))
      label = None if label_dir is None else os.path.join(label_dir, stem + label_suffix)
      pairs.append(SourcePair(os.path.relpath(image, self.data_dir), image, label))
    return pairs


def read_bytes(source: str | bytes) -> bytes:
  """Returns the bytes of a `SourcePair` field (reading the file when it is a path).

  Raises:
    BadFileError: when the file cannot be read.
  """
  if isinstance(source, bytes):
    return source
  try:
    with open(source, "rb") as f:
      return f.read()
  except OSError as e:
    raise BadFileError(source, f"cannot read ({e.strerror or e})") from None


def source_name(source: str | bytes) -> str:
  """A name for a `SourcePair` field in error messages."""
  return source if isinstance(source, str) else f"<{len(source)} bytes in memory>"


def decode_image(source: str | bytes) -> Image.Image:
  """Decodes an image file with PIL, keeping its mode (palette images stay "P").

  Raises:
    BadFileError: when the file cannot be read or decoded.
  """
  data = read_bytes(source)
  try:
    image = Image.open(io.BytesIO(data))
    image.load()
  except Exception as e:  # PIL raises many exception types for corrupt files.
    raise BadFileError(source_name(source), f"cannot decode image ({e})") from None
  return image


def read_index_image(source: str | bytes) -> np.ndarray:
  """Reads a single-channel label image (grey or palette PNG) as its stored values.

  Palette ("P") images yield their palette INDICES, not colours: GTA5 and VOC store class ids
  that way.

  Returns:
    An integer array [H, W].

  Raises:
    BadFileError: when the file is unreadable or has several channels.
  """
  array = np.array(decode_image(source))
  if array.ndim != 2:
    raise BadFileError(source_name(source),
                       f"expected a single-channel label image, got shape {array.shape}")
  return array


def apply_table(raw: np.ndarray, table: np.ndarray, source: str | bytes) -> np.ndarray:
  """Maps raw ids through a dense table, refusing ids the table does not cover.

  Args:
    raw: Integer array of raw ids.
    table: int array; `table[raw_id]` is the storage id (IGNORE_ID for legitimately unused
      ids) or -1 for ids that must not occur.
    source: The file the ids came from, for the error message.

  Returns:
    uint8 array of storage ids, shaped like `raw`.

  Raises:
    BadFileError: naming the file and the offending ids.
  """
  raw = raw.astype(np.int64, copy=False)
  outside = (raw < 0) | (raw >= len(table))
  mapped = np.where(outside, -1, table[np.clip(raw, 0, len(table) - 1)])
  if (mapped < 0).any():
    bad = np.unique(raw[mapped < 0])
    raise BadFileError(source_name(source),
                       f"label ids {bad[:10].tolist()} are outside the dataset's id range")
  return mapped.astype(np.uint8)


def id_table(mapping: Mapping[int, int], size: int, unused: int = labels.IGNORE_ID) -> np.ndarray:
  """Builds a table for `apply_table`.

  Args:
    mapping: Raw id -> storage id.
    size: Raw ids 0..size-1 are legitimate; larger ones are errors.
    unused: What legitimate raw ids outside `mapping` become (IGNORE_ID, or -1 to forbid them).

  Returns:
    An int16 array of length `size`.
  """
  table = np.full((size,), unused, dtype=np.int16)
  for raw, storage in mapping.items():
    table[raw] = storage
  return table
