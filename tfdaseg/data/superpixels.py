"""SLIC superpixels of a training image, computed in the input pipeline.

Hierarchical region selection (Sun et al., CVPR 2019) scores regions of the source image; a
method that wants superpixel regions asks for this feature on a stream
(`Method.stream_features`), and every example of that stream then carries
`example["superpixels"]`: int32 [h, w] segment ids in [0, max_segments), computed by
`skimage.segmentation.slic` on the augmented image (so the segments are those of the pixels the
network sees), at the image size divided by `downsample` (the methods read them at their
prediction's stride anyway, and SLIC's cost grows with the pixels).
"""

import dataclasses
from typing import ClassVar

import numpy as np
import tensorflow as tf
from skimage import segmentation

from tfdaseg.data import preprocessing
from tfdaseg.utils.config_fields import ConfigError

SUPERPIXELS = "superpixels"


def slic_segments(image_rgb: np.ndarray, num_segments: int, compactness: float,
                  max_segments: int) -> np.ndarray:
  """SLIC segment ids of one RGB image.

  Args:
    image_rgb: uint8 [h, w, 3].
    num_segments: SLIC's approximate number of segments (`n_segments`).
    compactness: SLIC's colour / space balance (higher: more square segments).
    max_segments: Ids at or above it (SLIC may return a few more segments than asked) are
      merged into the last id, so that the ids fit a fixed-size table.

  Returns:
    int32 [h, w] ids 0, 1, ... in SLIC's order (consecutive), clipped to max_segments - 1.
  """
  ids = segmentation.slic(image_rgb, n_segments=num_segments, compactness=compactness,
                          start_label=0, channel_axis=-1)
  return np.minimum(ids, max_segments - 1).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class SlicSuperpixels:
  """The superpixel feature of a stream's examples (see the module docstring).

  Args:
    num_segments: SLIC's approximate segments per image.
    compactness: SLIC's compactness (its default, 10, for uint8 colour in Lab).
    downsample: The segments are computed on the image shrunk by this factor (area filter).
  """

  num_segments: int = 100
  compactness: float = 10.0
  downsample: int = 4
  key: ClassVar[str] = SUPERPIXELS

  def __post_init__(self):
    if self.num_segments < 1 or self.downsample < 1 or self.compactness <= 0:
      raise ConfigError(f"superpixels: num_segments ({self.num_segments}) and downsample "
                        f"({self.downsample}) must be >= 1 and compactness "
                        f"({self.compactness}) > 0")

  @property
  def max_segments(self) -> int:
    """The size of the id table: SLIC returns about `num_segments`, rarely twice as many."""
    return 2 * self.num_segments

  def __call__(self, example: dict[str, tf.Tensor]) -> tf.Tensor:
    """int32 [ceil(H / downsample), ceil(W / downsample)] ids of `example["image"]`."""
    image = preprocessing.caffe_unpreprocess(example["image"])
    size = -(-tf.shape(image)[:2] // self.downsample)
    if self.downsample > 1:
      image = tf.cast(tf.round(tf.image.resize(image, size, method="area")), tf.uint8)
    ids = tf.numpy_function(
        lambda x: slic_segments(x, self.num_segments, self.compactness, self.max_segments),
        [image], tf.int32, stateful=False)
    static = [None if d is None else -(-d // self.downsample) for d in example["image"].shape[:2]]
    return tf.ensure_shape(ids, static)
