"""Random scale, crop and horizontal flip of an (image, label) pair, driven by stateless seeds.

Off by default: the AdaptSegNet reference trains without augmentation. Every random draw comes
from a per-example seed, so a seeded pipeline augments identically on every run. The crop can
re-draw like DAFormer's (`cat_max_ratio`), its candidates split from the same seed. A target
stream can carry HRDA's pseudo-label margins (`pseudo_margins`): a mask drawn on the whole image
and cropped and flipped with it, so a margin only counts where the crop reaches the image's edge.
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
    cat_max_ratio: Re-draw the crop while one label covers at least this share of its
      labelled pixels (DAFormer's RandomCrop, see `choose_crop_seed`); None draws once. Counted
      on the storage ids, which for GTA5 and SYNTHIA are the reference's train ids.
    pseudo_margins: (top, bottom, left, right) pixels of the stream's image, before scaling and
      cropping, whose pseudo-labels weigh 0 (HRDA's crop_pseudo_margins, [30, 240, 30, 30] on
      2048x1024 Cityscapes in configs/hrda/gtaHR2csHR_hrda.py); the example gains a
      PSEUDO_VALID mask. None: no mask. Padding outside the image is masked too (our choice;
      HRDA's crops never pad).
  """

  min_scale: float = 1.0
  max_scale: float = 1.0
  crop_size: tuple[int, int] | None = None
  hflip: bool = False
  cat_max_ratio: float | None = None
  pseudo_margins: tuple[int, int, int, int] | None = None

  def __post_init__(self):
    if not 0 < self.min_scale <= self.max_scale:
      raise ValueError(f"augment scales must satisfy 0 < min_scale <= max_scale, got "
                       f"{self.min_scale}, {self.max_scale}")
    # mmseg skips the re-draw at its default 1.0; here None is that, so 1.0 is refused
    # rather than silently meaning something else.
    if self.cat_max_ratio is not None and not 0 < self.cat_max_ratio < 1:
      raise ValueError(f"augment cat_max_ratio must satisfy 0 < cat_max_ratio < 1 (None: no "
                       f"re-draw), got {self.cat_max_ratio}")
    if self.pseudo_margins is not None and (
        len(self.pseudo_margins) != 4 or
        not all(isinstance(m, int) and m >= 0 for m in self.pseudo_margins)):
      raise ValueError(f"augment pseudo_margins must be 4 pixel counts >= 0 (top, bottom, left, "
                       f"right), got {self.pseudo_margins}")

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
    for key in ("crop_size", "pseudo_margins"):
      if fields.get(key) is not None:
        fields[key] = tuple(fields[key])
    return cls(**fields)


# lhoyer/DAFormer mmseg/datasets/pipelines/transforms.py RandomCrop.__call__: `for _ in range(10)`.
CAT_MAX_RATIO_CHECKS = 10
# The example key of the pseudo-label margin mask: float32 [H, W], 1 where pseudo-labels count.
PSEUDO_VALID = "pseudo_valid"


def pseudo_margin_mask(height: int, width: int,
                       margins: tuple[int, int, int, int]) -> tf.Tensor:
  """HRDA's valid_pseudo_mask (lhoyer/HRDA mmseg/datasets/cityscapes.py `pre_pipeline`).

  Args:
    height: Image rows.
    width: Image columns.
    margins: (top, bottom, left, right) pixels set to 0.

  Returns:
    float32 [height, width, 1]: 0 in the margins, 1 elsewhere.
  """
  top, bottom, left, right = margins
  rows, cols = tf.range(height), tf.range(width)
  keep_rows = (rows >= top) & (rows < height - bottom)
  keep_cols = (cols >= left) & (cols < width - right)
  keep = keep_rows[:, tf.newaxis] & keep_cols[tf.newaxis, :]
  return tf.cast(keep, tf.float32)[..., tf.newaxis]


def crop_is_balanced(label: tf.Tensor, cat_max_ratio: float) -> tf.Tensor:
  """Whether a label crop has two or more labels, none covering cat_max_ratio of the labelled.

  DAFormer's test (transforms.py RandomCrop): `len(cnt) > 1 and np.max(cnt) / np.sum(cnt) <
  cat_max_ratio` over the counts of the crop's labels, the ignore label left out.

  Args:
    label: int32 label crop of ids in [0, 255].
    cat_max_ratio: The share one label must stay below.

  Returns:
    bool scalar.
  """
  counts = tf.math.bincount(tf.reshape(label, [-1]), minlength=256, maxlength=256,
                            dtype=tf.int64)
  counts = tf.tensor_scatter_nd_update(counts, [[labels.IGNORE_ID]], [0])
  present = tf.math.count_nonzero(counts)
  # float64 as numpy's int / int; the maximum keeps an all-ignore crop finite (it fails anyway).
  share = tf.cast(tf.reduce_max(counts), tf.float64) / tf.cast(
      tf.maximum(tf.reduce_sum(counts), 1), tf.float64)
  return tf.logical_and(present > 1, share < cat_max_ratio)


def crop_candidate_seeds(crop_seed: tf.Tensor) -> tf.Tensor:
  """The seeds of the cat_max_ratio crop's candidates, in the order they are checked.

  Args:
    crop_seed: int64 [2] seed of the crop; it is candidate 0, the crop without cat_max_ratio.

  Returns:
    int64 [CAT_MAX_RATIO_CHECKS + 1, 2]: candidate 0, then seeds split from crop_seed.
  """
  return tf.concat([crop_seed[tf.newaxis], tf.random.experimental.stateless_split(
      crop_seed, CAT_MAX_RATIO_CHECKS)], axis=0)


def choose_crop_seed(label: tf.Tensor, crop_hw: tuple[int, int], crop_seed: tf.Tensor,
                     cat_max_ratio: float) -> tf.Tensor:
  """The seed of DAFormer's cat_max_ratio crop: the first balanced candidate, else the last.

  As mmseg's RandomCrop: candidate 0 is checked, and each of the CAT_MAX_RATIO_CHECKS checks
  that fails draws the next one, so the 11th candidate is kept unchecked. The candidates are
  `crop_candidate_seeds(crop_seed)`, so one seed always gives one crop.

  Args:
    label: int32 [H, W, 1] label, already padded to at least the crop.
    crop_hw: (height, width) of the crop.
    crop_seed: int64 [2] seed of the crop.
    cat_max_ratio: The share one label must stay below.

  Returns:
    int64 [2] seed for `tf.image.stateless_random_crop` of the crop to keep.
  """
  candidates = crop_candidate_seeds(crop_seed)
  size = [crop_hw[0], crop_hw[1], 1]

  def rejected(i: tf.Tensor) -> tf.Tensor:
    # The crop's offset depends on the seed, the rank and the margins only, so the label
    # crop here is the label part of the image-and-label crop made with the same seed.
    crop = tf.image.stateless_random_crop(label, size, candidates[i])
    return tf.logical_not(crop_is_balanced(crop, cat_max_ratio))

  def draw_again(i: tf.Tensor) -> tf.Tensor:
    return tf.cond(i < CAT_MAX_RATIO_CHECKS, lambda: rejected(i), lambda: tf.constant(False))

  [chosen] = tf.while_loop(draw_again, lambda i: [i + 1], [tf.constant(0)])
  return candidates[chosen]


def augment(image: tf.Tensor, label: tf.Tensor, seed: tf.Tensor,
            config: AugmentConfig) -> tuple[tf.Tensor, tf.Tensor]:
  """Augments one preprocessed example: `augment_with_pseudo_mask`, whose arguments it takes,
  without the mask.

  Returns:
    (image, label) with the crop size (or the input size) as static shape.
  """
  image, label, _ = augment_with_pseudo_mask(image, label, seed, config)
  return image, label


def augment_with_pseudo_mask(image: tf.Tensor, label: tf.Tensor, seed: tf.Tensor,
                             config: AugmentConfig
                             ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor | None]:
  """`augment`, also moving the `pseudo_margin_mask` of `config.pseudo_margins` with the pixels.

  Args:
    image: float32 [H, W, 3], already mean-subtracted.
    label: uint8 [H, W, 1] storage ids.
    seed: int [2] stateless seed for this example.
    config: What to apply.

  Returns:
    (image, label, mask) with the crop size (or the input size) as static shape; the mask
    float32 [h, w], or None without margins.
  """
  mask = None
  if config.pseudo_margins is not None:
    mask = pseudo_margin_mask(tf.shape(image)[0], tf.shape(image)[1], config.pseudo_margins)
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
    if mask is not None:
      mask = tf.image.resize(mask, size, method="nearest")
  # Pad to at least the crop, with values that read as "mean colour" and "ignore".
  pad_h = tf.maximum(height - size[0], 0)
  pad_w = tf.maximum(width - size[1], 0)
  image = tf.pad(image, [[0, pad_h], [0, pad_w], [0, 0]])
  label = tf.pad(tf.cast(label, tf.int32) - labels.IGNORE_ID, [[0, pad_h], [0, pad_w], [0, 0]])
  label = label + labels.IGNORE_ID
  channels = [image, tf.cast(label, tf.float32)]
  if mask is not None:
    channels.append(tf.pad(mask, [[0, pad_h], [0, pad_w], [0, 0]]))
  if config.cat_max_ratio is not None:
    crop_seed = choose_crop_seed(label, (height, width), crop_seed, config.cat_max_ratio)
  stacked = tf.concat(channels, axis=-1)
  stacked = tf.image.stateless_random_crop(stacked, [height, width, len(channels) + 2], crop_seed)
  if config.hflip:
    stacked = tf.image.stateless_random_flip_left_right(stacked, flip_seed)
  if mask is not None:
    mask = stacked[..., 4]
  return stacked[..., :3], tf.cast(stacked[..., 3:4], tf.uint8), mask
