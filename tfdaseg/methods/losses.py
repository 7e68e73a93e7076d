"""Loss functions shared by the methods, in float32, with the reference's conventions."""

import tensorflow as tf

from tfdaseg.data.labels import IGNORE_ID
from tfdaseg.models.output_conventions import upsample_bilinear


def segmentation_loss(logits: tf.Tensor, labels: tf.Tensor, num_classes: int,
                      pixel_weights: tf.Tensor | None = None,
                      average_over_all_pixels: bool = False,
                      align_corners: bool = True) -> tf.Tensor:
  """Pixel cross-entropy averaged over labelled pixels (the reference's CrossEntropy2d).

  Args:
    logits: [B, h, w, C] logits at any resolution; upsampled to the labels' size first.
    labels: Integer [B, H, W] class ids; IGNORE_ID (255) and ids outside [0, C) are ignored.
    num_classes: C.
    pixel_weights: Optional float [B, H, W] weight of each pixel's term (pseudo-label
      confidence, ClassMix masks).
    average_over_all_pixels: Divide by all pixels instead of the labelled ones, as DACS's
      CrossEntropyLoss2dPixelWiseWeighted (torch.mean over ignored pixels too) and mmseg's
      weighted CE do.
    align_corners: `upsample_bilinear`'s mode.

  Returns:
    float32 scalar; 0 when no pixel is labelled (as the reference returns zeros then).
  """
  labels = tf.cast(labels, tf.int32)
  logits = upsample_bilinear(logits, tf.shape(labels)[1:3], align_corners)
  valid = (labels >= 0) & (labels < num_classes) & (labels != IGNORE_ID)
  per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=tf.where(valid, labels, 0), logits=logits)
  weights = tf.cast(valid, tf.float32)
  count = tf.cast(tf.size(labels), tf.float32) if average_over_all_pixels else tf.reduce_sum(
      weights)
  if pixel_weights is not None:
    weights = weights * tf.cast(pixel_weights, tf.float32)
  return tf.reduce_sum(per_pixel * weights) / tf.maximum(count, 1.0)


def normalised_entropy_map(logits: tf.Tensor) -> tf.Tensor:
  """Weighted self-information -p log p / log C per class (ADVENT's prob_2_entropy).

  Args:
    logits: [..., C] logits.

  Returns:
    float32 [..., C]; its sum over C is the pixel's entropy normalised to [0, 1].
  """
  logits = tf.cast(logits, tf.float32)
  num_classes = tf.cast(tf.shape(logits)[-1], tf.float32)
  # log_softmax instead of ADVENT's log2(p + 1e-30): the same value without the epsilon.
  return -tf.nn.softmax(logits) * tf.nn.log_softmax(logits) / tf.math.log(num_classes)


def entropy_loss(logits: tf.Tensor) -> tf.Tensor:
  """Mean over pixels of the normalised entropy (ADVENT's entropy_loss, MinEnt).

  Args:
    logits: [B, H, W, C] logits.

  Returns:
    float32 scalar in [0, 1].
  """
  return tf.reduce_mean(tf.reduce_sum(normalised_entropy_map(logits), axis=-1))
