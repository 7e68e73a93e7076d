"""Random scale, crop and horizontal flip of an (image, label) pair, driven by stateless seeds.

Off by default: the AdaptSegNet reference trains without augmentation. Every random draw comes
from a per-example seed, so a seeded pipeline augments identically on every run.
"""

import dataclasses
from typing import Any, Mapping

import tensorflow as tf

from tfdaseg.data import labels


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Which augmentations to apply.

  Args:
    min_scale: Smallest random scale factor.
    max_scale: Largest random scale factor (equal to min_scale: no scaling when both are 1).
    crop_size: (width, height) of the random crop; None crops back to the input size. Areas
      outside the scaled image are padded with the mean colour (0 after preprocessing) and
      the ignore label.
    hflip: Flip left-right with probability 1/2.
  """

  min_scale: float = 1.0
  max_scale: float = 1.0
  crop_size: tuple[int, int] | None = None
  hflip: bool = False

  def __post_init__(self):
    if not 0 < self.min_scale <= self.max_scale:
      raise ValueError(f"augment scales must satisfy 0 < min_scale <= max_scale, got "
                       f"{self.min_scale}, {self.max_scale}")

  @classmethod
  def from_value(cls, value: "AugmentConfig | Mapping[str, Any] | None") -> "AugmentConfig | None":
    """Accepts a config, a dict of its fields (from a flag or JSON), or None."""
    if value is None or isinstance(value, cls):
      return value
    unknown = set(value) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ValueError(f"unknown augment options {sorted(unknown)}; known: "
                       f"{[f.name for f in dataclasses.fields(cls)]}")
    fields = dict(value)
    if fields.get("crop_size") is not None:
      fields["crop_size"] = tuple(fields["crop_size"])
    return cls(**fields)


def augment(image: tf.Tensor, label: tf.Tensor, seed: tf.Tensor,
            config: AugmentConfig) -> tuple[tf.Tensor, tf.Tensor]:
  """Augments one preprocessed example.

  Args:
    image: float32 [H, W, 3], already mean-subtracted.
    label: uint8 [H, W, 1] storage ids.
    seed: int [2] stateless seed for this example.
    config: What to apply.

  Returns:
    (image, label) with the crop size (or the input size) as static shape.
  """
  scale_seed, crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3))
  height, width = image.shape[0], image.shape[1]
  if config.crop_size is not None:
    width, height = config.crop_size
  size = tf.shape(image)[:2]
  if config.max_scale != 1.0 or config.min_scale != 1.0:
    scale = tf.random.stateless_uniform([], scale_seed, config.min_scale, config.max_scale)
    size = tf.cast(tf.round(tf.cast(size, tf.float32) * scale), tf.int32)
    image = tf.image.resize(image, size, method="bilinear")
    label = tf.image.resize(label, size, method="nearest")
  # Pad to at least the crop, with values that read as "mean colour" and "ignore".
  pad_h = tf.maximum(height - size[0], 0)
  pad_w = tf.maximum(width - size[1], 0)
  image = tf.pad(image, [[0, pad_h], [0, pad_w], [0, 0]])
  label = tf.pad(tf.cast(label, tf.int32) - labels.IGNORE_ID, [[0, pad_h], [0, pad_w], [0, 0]])
  label = label + labels.IGNORE_ID
  stacked = tf.concat([image, tf.cast(label, tf.float32)], axis=-1)
  stacked = tf.image.stateless_random_crop(stacked, [height, width, 4], crop_seed)
  if config.hflip:
    stacked = tf.image.stateless_random_flip_left_right(stacked, flip_seed)
  return stacked[..., :3], tf.cast(stacked[..., 3:], tf.uint8)
