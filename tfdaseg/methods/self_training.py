"""What the mean-teacher self-training methods share: pseudo-labels, ClassMix, masked images.

Every random draw is a stateless Philox op of an explicit seed (`StepContext.seed_for`), so a
resumed run mixes and masks as an uninterrupted one; draws are compared as raw uint32 bits (no
float conversion, which differs under XLA on CPU: see `tfdaseg.methods.augmentations`).

References: DACS (github.com/vikolss/DACS @ cc6a87f, trainUDA.py), DAFormer
(github.com/lhoyer/DAFormer @ e6f6e04, mmseg/models/uda/dacs.py,
mmseg/models/utils/dacs_transforms.py), MIC (github.com/lhoyer/MIC @ 2f932a9,
seg/mmseg/models/uda/masking_consistency_module.py, seg/mmseg/models/utils/masking_transforms.py).
"""

import tensorflow as tf

from tfdaseg.data.augment import pseudo_margin_mask

_ALG = "philox"
# The height DAFormer's ignored pseudo-label rows (15 top, 120 bottom) are given at: its 512x512
# crops (configs/daformer/gta2cs_uda_warm_fdthings_rcs_croppl_a999_daformer_mitb5_s0.py:30-31).
REFERENCE_CROP_HEIGHT = 512
QUALITY_SCOPES = ("batch", "image")


def random_bits(shape, seed: tf.Tensor) -> tf.Tensor:
  """uint32 Philox bits of `shape` from an int32/int64 [2] seed."""
  return tf.random.stateless_uniform(shape, seed, minval=None, maxval=None, dtype=tf.uint32,
                                     alg=_ALG)


def pseudo_labels(logits: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """argmax and max of the softmax (DACS trainUDA.py:421-422, DAFormer dacs.py:272-273).

  Args:
    logits: float [B, H, W, C] teacher logits at the image's size.

  Returns:
    (int32 [B, H, W] labels, float32 [B, H, W] max probabilities), without gradient.
  """
  probabilities = tf.nn.softmax(tf.stop_gradient(tf.cast(logits, tf.float32)), axis=-1)
  return (tf.argmax(probabilities, axis=-1, output_type=tf.int32),
          tf.reduce_max(probabilities, axis=-1))


def quality_weight(max_probabilities: tf.Tensor, threshold: float,
                   scope: str = "batch") -> tf.Tensor:
  """The share of pixels whose max probability is >= threshold, one scalar per scope.

  DACS `threshold_uniform` (trainUDA.py:466-468) and DAFormer (dacs.py:274-278) divide by every
  pixel of the batch; "image" gives each image its own share (details ours). On several
  replicas "batch" is the replica's batch.

  Args:
    max_probabilities: float [B, H, W].
    threshold: 0.968 in both references.
    scope: "batch" or "image".

  Returns:
    float32 [B, H, W], the weight broadcast over each pixel.
  """
  if scope not in QUALITY_SCOPES:
    raise ValueError(f"unknown quality-weight scope {scope!r}; known: {QUALITY_SCOPES}")
  confident = tf.cast(max_probabilities >= threshold, tf.float32)
  axes = [0, 1, 2] if scope == "batch" else [1, 2]
  share = tf.reduce_mean(confident, axis=axes, keepdims=True)
  return tf.broadcast_to(share, tf.shape(confident))


def scaled_rows(rows: int, height: int) -> int:
  """`rows` given at REFERENCE_CROP_HEIGHT, scaled to an image of `height` rows (rounded)."""
  return int(round(rows * height / REFERENCE_CROP_HEIGHT))


def ignore_rows(weights: tf.Tensor, top: int, bottom: int) -> tf.Tensor:
  """Zeroes the top and bottom rows of pseudo-label weights (DAFormer dacs.py:280-286).

  DAFormer drops rows with rectification artefacts and the ego-car of Cityscapes; its counts are
  for 512-row crops and are scaled to the weights' height here.

  Args:
    weights: float32 [B, H, W] (H static).
    top: Rows at a 512-row crop (DAFormer 15 for Cityscapes; 0 keeps all).
    bottom: Rows at a 512-row crop (DAFormer 120).

  Returns:
    float32 [B, H, W].
  """
  height = weights.shape[1]
  margins = (scaled_rows(top, height), scaled_rows(bottom, height), 0, 0)
  keep = pseudo_margin_mask(height, tf.shape(weights)[2], margins)[..., 0]
  return weights * tf.cast(keep, weights.dtype)[tf.newaxis]


def _class_slots(labels: tf.Tensor, num_classes: int) -> tf.Tensor:
  """Labels as slots 0..C: class ids, and C for the ignore id (and any id outside [0, C))."""
  labels = tf.cast(labels, tf.int32)
  valid = (labels >= 0) & (labels < num_classes)
  return tf.where(valid, labels, num_classes)


def classmix_masks(labels: tf.Tensor, seed: tf.Tensor, num_classes: int) -> tf.Tensor:
  """ClassMix masks: per image, the pixels of half of the classes present in its label.

  DACS trainUDA.py:424-435: per image, `torch.unique(labels[i])` (the ignore label counts as a
  class: DACS's filter of it is commented out, trainUDA.py:427), of which
  n = (nc + nc % 2) / 2 are drawn uniformly without replacement; the mask holds their pixels.
  (DAFormer dacs_transforms.py:92 draws from the classes of the whole batch; per image here, as
  DACS.) The subset is the n present classes with the smallest random keys.

  Args:
    labels: Integer [B, H, W] source labels (255 ignore).
    seed: int32/int64 [2] stateless seed.
    num_classes: C.

  Returns:
    bool [B, H, W]: True where the source pixel is pasted.
  """
  slots = _class_slots(labels, num_classes)
  chosen = chosen_classes(slots, seed, num_classes)
  return tf.gather(chosen, slots, batch_dims=1)


def chosen_classes(slots: tf.Tensor, seed: tf.Tensor, num_classes: int) -> tf.Tensor:
  """Per image, which of the slots 0..C (C: ignore) ClassMix pastes.

  Args:
    slots: int32 [B, H, W] from `_class_slots`.
    seed: Stateless seed.
    num_classes: C.

  Returns:
    bool [B, C + 1].
  """
  count = num_classes + 1
  present = tf.reduce_any(tf.one_hot(slots, count, on_value=True, off_value=False), axis=[1, 2])
  keys = random_bits([tf.shape(slots)[0], count], seed)
  index = tf.range(count)
  # rank[b, i]: how many present classes come before class i in the random order (ties by id).
  other, this = keys[:, tf.newaxis, :], keys[:, :, tf.newaxis]
  before = (other < this) | ((other == this) & (index[tf.newaxis, :] < index[:, tf.newaxis]))
  rank = tf.reduce_sum(tf.cast(before & present[:, tf.newaxis, :], tf.int32), axis=2)
  present_count = tf.reduce_sum(tf.cast(present, tf.int32), axis=1, keepdims=True)
  to_choose = (present_count + present_count % 2) // 2
  return present & (rank < to_choose)


def mix(mask: tf.Tensor, pasted: tf.Tensor, background: tf.Tensor) -> tf.Tensor:
  """`pasted` where `mask`, else `background` (DACS transformsgpu.oneMix, DAFormer one_mix).

  Args:
    mask: bool [B, H, W].
    pasted: [B, H, W] or [B, H, W, C].
    background: Same shape and dtype as `pasted`.

  Returns:
    The mixed tensor.
  """
  if pasted.shape.rank == 4:
    mask = mask[..., tf.newaxis]
  return tf.where(mask, pasted, background)


def block_mask(batch: int | tf.Tensor, height: int, width: int, seed: tf.Tensor,
               block_size: int, mask_ratio: float) -> tf.Tensor:
  """MIC's random patch mask: 1 where the image is kept, 0 where masked.

  MIC masking_transforms.py:28-36: a grid of round(H / b) x round(W / b) cells, each kept when
  U > mask_ratio, resized (nearest) to the image. Here a cell is kept when its uint32 bits are
  >= mask_ratio * 2^32 (the same probability).

  Args:
    batch: B.
    height: H (static).
    width: W (static).
    seed: Stateless seed.
    block_size: Cell side in pixels b (MIC 64 at full resolution).
    mask_ratio: Probability that a cell is masked (MIC 0.7).

  Returns:
    float32 [B, H, W].
  """
  cells = (max(round(height / block_size), 1), max(round(width / block_size), 1))
  threshold = tf.constant(min(int(mask_ratio * 2**32), 2**32 - 1), tf.uint32)
  kept = tf.cast(random_bits([batch, *cells], seed) >= threshold, tf.float32)
  # mmseg `resize` defaults to nearest (mmseg/ops/wrappers.py), which is floor(i * cells / H).
  rows = tf.minimum(tf.range(height) * cells[0] // height, cells[0] - 1)
  cols = tf.minimum(tf.range(width) * cells[1] // width, cells[1] - 1)
  return tf.gather(tf.gather(kept, rows, axis=1), cols, axis=2)



def downscale_label_ratio(labels: tf.Tensor, scale_factor: int, min_ratio: float,
                          num_classes: int) -> tf.Tensor:
  """DAFormer's `downscale_label_ratio` (mmseg/utils/utils.py:18-39).

  The majority class of each scale_factor x scale_factor cell (average pooling of the one-hot
  labels, ignore as one more class), ignored where its share is below min_ratio.

  Args:
    labels: Integer [B, H, W] (255 ignore).
    scale_factor: Cell side (> 1).
    min_ratio: Smallest share of the majority class (DAFormer 0.75).
    num_classes: C.

  Returns:
    int32 [B, H // s, W // s], 255 where ignored.
  """
  slots = _class_slots(labels, num_classes)
  one_hot = tf.one_hot(slots, num_classes + 1, dtype=tf.float32)
  shares = tf.nn.avg_pool2d(one_hot, scale_factor, scale_factor, "VALID")
  majority = tf.argmax(shares, axis=-1, output_type=tf.int32)
  keep = (majority != num_classes) & (tf.reduce_max(shares, axis=-1) >= min_ratio)
  return tf.where(keep, majority, 255)


def masked_feature_distance(student: tf.Tensor, reference: tf.Tensor,
                            mask: tf.Tensor) -> tf.Tensor:
  """Mean over masked pixels of the per-pixel L2 distance (DAFormer dacs.py:153-162).

  The norm's square root is clamped at 1e-12 (squared) so that its gradient is 0, not NaN, where
  the two features are equal (at the start of training); no masked pixel gives 0 (DAFormer's
  mean of nothing would be NaN; details ours).

  Args:
    student: float [B, h, w, C].
    reference: float [B, h, w, C], held fixed.
    mask: bool [B, h, w].

  Returns:
    float32 scalar.
  """
  squared = tf.reduce_sum(tf.square(tf.cast(student, tf.float32) -
                                    tf.stop_gradient(tf.cast(reference, tf.float32))), axis=-1)
  distance = tf.sqrt(tf.maximum(squared, 1e-12))
  weights = tf.cast(mask, tf.float32)
  return tf.reduce_sum(distance * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)
