"""A discriminator on per-class feature vectors, for semantic-level adversarial learning (ASS)."""

from typing import Sequence

import keras
from keras import ops

from tfdaseg.models.registry import MODELS

LEAKY_SLOPE = 0.2


@keras.saving.register_keras_serializable(package="tfdaseg")
class PerClassDense(keras.layers.Layer):
  """One linear unit per class: [B, K, C] -> [B, K], with a separate weight vector per class.

  Args:
    num_classes: K.
    **kwargs: Base `keras.layers.Layer` arguments.

  Example:
    >>> layer = PerClassDense(num_classes=4)
    >>> tuple(layer(keras.ops.zeros((2, 4, 8))).shape)
    (2, 4)
  """

  def __init__(self, num_classes: int, **kwargs):
    super().__init__(**kwargs)
    self.num_classes = int(num_classes)

  def build(self, input_shape):
    if input_shape[-2] is not None and input_shape[-2] != self.num_classes:
      raise ValueError(f"expected {self.num_classes} classes on axis -2, got shape {input_shape}")
    self.kernel = self.add_weight(name="kernel", shape=(self.num_classes, input_shape[-1]),
                                  initializer="glorot_uniform")
    self.bias = self.add_weight(name="bias", shape=(self.num_classes,), initializer="zeros")

  def call(self, inputs):
    return ops.einsum("bkc,kc->bk", inputs, self.kernel) + self.bias

  def compute_output_shape(self, input_shape):
    return tuple(input_shape[:-1])

  def get_config(self):
    config = super().get_config()
    config.update(num_classes=self.num_classes)
    return config


@MODELS.register("class_wise_discriminator")
def class_wise_discriminator(num_classes: int, num_channels: int,
                             hidden_units: Sequence[int] = (256, 128)) -> keras.Model:
  """An MLP shared by all classes, then one logit per class from a per-class linear unit.

  Input: per-image class-wise average features [B, K, C] (e.g. layer4 features averaged under
  each class mask); output: real/fake logits [B, K]. The trainer masks classes absent from an
  image.

  Args:
    num_classes: K.
    num_channels: C, the feature width.
    hidden_units: Widths of the shared hidden layers (LeakyReLU(0.2) after each).

  Returns:
    The discriminator.

  Example:
    >>> d = class_wise_discriminator(num_classes=19, num_channels=32, hidden_units=(16,))
    >>> tuple(d(keras.ops.zeros((2, 19, 32))).shape)
    (2, 19)
  """
  inputs = keras.Input(shape=(num_classes, num_channels), name="class_features")
  x = inputs
  for index, units in enumerate(hidden_units, start=1):
    x = keras.layers.Dense(units, name=f"dense{index}")(x)
    x = keras.layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name=f"dense{index}_lrelu")(x)
  logits = PerClassDense(num_classes, name="classifier")(x)
  return keras.Model(inputs, logits, name="class_wise_discriminator")
