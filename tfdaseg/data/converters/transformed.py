"""A converted split read back and written again with its pixels transformed (tfdaseg.data.transforms).

The copy is content-aligned with its source: the same records in the same order and shards, each
with its `image/filename` and label, only the image transformed (stored as PNG). Feature-map
regression (tfdaseg.methods.feature_regression) reads the two in lockstep. The transformation
chain and its seed are the converter's options, so the manifest names them and a resumed write
never mixes two chains. Not a registered dataset: `tools/make_transformed_dataset.py` drives it.
"""

import collections
import dataclasses
import io
import os

import numpy as np
import tensorflow as tf
from PIL import Image

from tfdaseg.data import record_encoder
from tfdaseg.data import schema
from tfdaseg.data import shards
from tfdaseg.data import transforms
from tfdaseg.data.converters import base
from tfdaseg.utils.files import read_json

# A pair's image (and label) name its record as "<shard path>#<index>" until `fetch` loads it.
_REF_SEPARATOR = "#"


@dataclasses.dataclass(frozen=True)
class TransformOptions(base.ConverterOptions):
  """What is transformed, and how.

  Args:
    source: TFRecord pattern of the converted split that is copied.
    transforms: The chain's canonical text (`transforms.chain_text`).
    seed: The chain's seed.
  """

  source: str = ""
  transforms: str = ""
  seed: int = 0


class TransformedSplitConverter(base.Converter):
  """Lists a converted split's records and yields them with transformed images.

  Args:
    options: The source split, the chain and its seed.

  Raises:
    FileNotFoundError, ValueError: naming the pattern, when it matches no split with a manifest.
  """

  # `fetch` reads a shard at a time, and the copy must keep the source's order.
  random_access = False

  def __init__(self, options: TransformOptions):
    files = shards.match_files(options.source)
    manifests = sorted({shards.manifest_path_for_shard(f) for f in files})
    if len(manifests) != 1:
      raise ValueError(f"--input={options.source}: matches shards of {len(manifests)} splits; "
                       "name one split")
    self.source_manifest = read_json(manifests[0])
    listed = set(self.source_manifest["shards"])
    if {os.path.basename(f) for f in files} != listed:
      raise ValueError(f"--input={options.source}: matches only some shards of "
                       f"{manifests[0]}; the copy needs the whole split")
    super().__init__(os.path.dirname(manifests[0]), options)
    self.storage = self.source_manifest["class_space"]
    self.class_labels = bool(self.source_manifest.get("class_labels"))
    self.chain = transforms.parse_chain(options.transforms)
    self._shard_paths = [os.path.join(self.data_dir, name)
                         for name in self.source_manifest["shards"]]

  @property
  def split(self) -> str:
    """The source split's name."""
    return self.source_manifest["split"]

  def list_pairs(self, split: str) -> list[base.SourcePair]:
    del split  # the source pattern names it
    pairs = []
    labelled = self.source_manifest.get("labelled", True)
    for path in self._shard_paths:
      for index, record in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
        example = tf.train.Example.FromString(record)
        name = example.features.feature[schema.IMAGE_FILENAME].bytes_list.value[0].decode()
        ref = f"{path}{_REF_SEPARATOR}{index}"
        pairs.append(base.SourcePair(name, ref, ref if labelled else None))
    return pairs

  def fetch(self, pairs: list[base.SourcePair]) -> list[base.SourcePair]:
    wanted = collections.defaultdict(set)
    for pair in pairs:
      path, index = pair.image.rsplit(_REF_SEPARATOR, 1)
      wanted[path].add(int(index))
    records = {}
    for path, indices in wanted.items():
      for index, record in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
        if index in indices:
          records[f"{path}{_REF_SEPARATOR}{index}"] = tf.train.Example.FromString(record)
    return [self._transformed(pair, records[pair.image]) for pair in pairs]

  def _transformed(self, pair: base.SourcePair, example: tf.train.Example) -> base.SourcePair:
    feature = example.features.feature
    image = Image.open(io.BytesIO(feature[schema.IMAGE_ENCODED].bytes_list.value[0]))
    rgb = np.asarray(image.convert("RGB"))
    moved = transforms.apply_chain(self.chain, rgb, self.options.seed, pair.filename)
    label = None
    if pair.label is not None:
      label = feature[schema.LABEL_ENCODED].bytes_list.value[0]
    return base.SourcePair(pair.filename, record_encoder.encode_png(moved), label)

  def read_label(self, label: str | bytes) -> np.ndarray:
    # Stored labels are already storage ids; the writer checks their range.
    return base.read_index_image(label).astype(np.uint8)
