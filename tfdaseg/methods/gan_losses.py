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
    loss: (discriminator logits, domain label) -> float32 scalar, averaged over outputs.
    threshold: Output value above which the discriminator's decision is "target" (for accuracy).
  """

  loss: Callable[[tf.Tensor, float], tf.Tensor]
  threshold: float

  def accuracy(self, logits: tf.Tensor, label: float) -> tf.Tensor:
    """Fraction of discriminator outputs that decide for `label`."""
    decided_target = logits > self.threshold
    correct = decided_target if label == TARGET_LABEL else tf.logical_not(decided_target)
    return tf.reduce_mean(tf.cast(correct, tf.float32))


def _bce(logits: tf.Tensor, label: float) -> tf.Tensor:
  # torch.nn.BCEWithLogitsLoss (AdaptSegNet, ADVENT).
  targets = tf.fill(tf.shape(logits), tf.constant(label, logits.dtype))
  return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits))


def _mse(logits: tf.Tensor, label: float) -> tf.Tensor:
  # torch.nn.MSELoss on the raw outputs (AdaptSegNet's --gan LS).
  return tf.reduce_mean(tf.square(logits - label))


GAN_LOSSES: Registry = Registry("gan loss")
GAN_LOSSES.register("vanilla")(GanLoss(loss=_bce, threshold=0.0))
GAN_LOSSES.register("ls")(GanLoss(loss=_mse, threshold=0.5))
