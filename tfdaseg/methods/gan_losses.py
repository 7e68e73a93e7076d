"""Adversarial losses on discriminator logits, by name (`--gan`)."""

import dataclasses
from typing import Callable

import tensorflow as tf

from tfdaseg.registry import Registry

# Domain labels of the reference: the discriminator says 0 for source, 1 for target.
SOURCE_LABEL = 0.0
TARGET_LABEL = 1.0


@dataclasses.dataclass(frozen=True)
class GanLoss:
  """A GAN objective.

  Args:
    elementwise: (discriminator logits, domain label) -> float32 loss of every output.
    threshold: Output value above which the discriminator's decision is "target" (for accuracy).
  """

  elementwise: Callable[[tf.Tensor, float], tf.Tensor]
  threshold: float

  def loss(self, logits: tf.Tensor, label: float) -> tf.Tensor:
    """The loss averaged over every output (float32 scalar)."""
    return tf.reduce_mean(self.elementwise(logits, label))

  def masked_loss(self, logits: tf.Tensor, label: float, mask: tf.Tensor) -> tf.Tensor:
    """The loss averaged over the outputs where `mask` (bool, logits' shape) holds; 0 if none.

    Static shapes throughout (no boolean_mask), so it compiles with XLA.
    """
    weights = tf.cast(mask, tf.float32)
    return tf.reduce_sum(self.elementwise(logits, label) * weights) / tf.maximum(
        tf.reduce_sum(weights), 1.0)

  def accuracy(self, logits: tf.Tensor, label: float) -> tf.Tensor:
    """Fraction of discriminator outputs that decide for `label`."""
    decided_target = logits > self.threshold
    correct = decided_target if label == TARGET_LABEL else tf.logical_not(decided_target)
    return tf.reduce_mean(tf.cast(correct, tf.float32))


def _bce(logits: tf.Tensor, label: float) -> tf.Tensor:
  # torch.nn.BCEWithLogitsLoss (AdaptSegNet, ADVENT).
  targets = tf.fill(tf.shape(logits), tf.constant(label, logits.dtype))
  return tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)


def _mse(logits: tf.Tensor, label: float) -> tf.Tensor:
  # torch.nn.MSELoss on the raw outputs (AdaptSegNet's --gan LS).
  return tf.square(logits - label)


GAN_LOSSES: Registry = Registry("gan loss")
GAN_LOSSES.register("vanilla")(GanLoss(elementwise=_bce, threshold=0.0))
GAN_LOSSES.register("ls")(GanLoss(elementwise=_mse, threshold=0.5))
