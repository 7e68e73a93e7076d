"""Fully convolutional discriminators: AdaptSegNet's `FCDiscriminator` and a feature-level variant.

Layer names mirror the reference (`conv1`..`conv4`, `classifier`) for the PyTorch weight import.
"""

from typing import Sequence

import keras

from tfdaseg.models.registry import MODELS

# AdaptSegNet FCDiscriminator: five k4 s2 p1 convs, widths ndf * (1, 2, 4, 8) then 1.
OUTPUT_SPACE_STRIDES = (2, 2, 2, 2, 2)
# The feature-level variant sees stride-8 features, so only two convs stride: its logits land at
# 1/32 of the image like the output-space one, and stride-8 maps as small as 4x4 still fit.
FEATURE_STRIDES = (2, 2, 1, 1, 1)
WIDTH_MULTIPLIERS = (1, 2, 4, 8)
LEAKY_SLOPE = 0.2


def fc_discriminator(num_channels: int, base_filters: int = 64,
                     strides: Sequence[int] = OUTPUT_SPACE_STRIDES, name: str = "discriminator",
                     input_shape: tuple = (None, None)) -> keras.Model:
  """Builds the FCDiscriminator pattern: 4 convs + LeakyReLU(0.2), then a 1-channel conv.

  A stride-2 conv is k4 p1 (the reference); a stride-1 conv is k3 p1 (keeps the size).

  Args:
    num_channels: Input channels (classes for the softmax input, 2048 for layer4 features).
    base_filters: Width of the first conv (the reference's `ndf`, 64).
    strides: Stride of each of the five convs.
    name: Model name.
    input_shape: (height, width) of the input; any by default.

  Returns:
    A functional `keras.Model` [B, H, W, num_channels] -> logits [B, h, w, 1].
  """
  if len(strides) != len(WIDTH_MULTIPLIERS) + 1:
    raise ValueError(f"strides must have {len(WIDTH_MULTIPLIERS) + 1} entries, got {strides}")
  inputs = keras.Input(shape=tuple(input_shape) + (num_channels,), name="inputs")
  x = inputs
  names = [f"conv{i}" for i in range(1, len(WIDTH_MULTIPLIERS) + 1)] + ["classifier"]
  widths = [base_filters * m for m in WIDTH_MULTIPLIERS] + [1]
  for layer_name, filters, stride in zip(names, widths, strides):
    x = keras.layers.ZeroPadding2D(1, name=f"{layer_name}_pad")(x)
    x = keras.layers.Conv2D(filters, 4 if stride == 2 else 3, strides=stride, padding="valid",
                            name=layer_name)(x)
    if layer_name != "classifier":
      x = keras.layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name=f"{layer_name}_lrelu")(x)
  return keras.Model(inputs, x, name=name)


@MODELS.register("output_space_discriminator")
def output_space_discriminator(num_channels: int, base_filters: int = 64) -> keras.Model:
  """AdaptSegNet's FCDiscriminator on the (upsampled) softmax: logits at ~1/32 of the input.

  Args:
    num_channels: Number of classes.
    base_filters: Width of the first conv (64 in the reference).

  Returns:
    The discriminator.

  Example:
    >>> d = output_space_discriminator(num_channels=19, base_filters=8)
    >>> tuple(d(keras.ops.zeros((1, 64, 128, 19))).shape)
    (1, 2, 4, 1)
  """
  return fc_discriminator(num_channels, base_filters, OUTPUT_SPACE_STRIDES,
                          name="output_space_discriminator")


@MODELS.register("feature_discriminator")
def feature_discriminator(num_channels: int = 2048, base_filters: int = 64) -> keras.Model:
  """Feature-level AdaptSegNet discriminator on layer4 features (stride 8).

  The FCDiscriminator pattern with only the first two convs strided (`FEATURE_STRIDES`): the
  logits are at 1/4 of the feature map, i.e. ~1/32 of the image, as for the output space.

  Args:
    num_channels: Feature channels (2048 for ResNet-101 layer4, 1024 for VGG-16 fc7).
    base_filters: Width of the first conv.

  Returns:
    The discriminator.
  """
  return fc_discriminator(num_channels, base_filters, FEATURE_STRIDES,
                          name="feature_discriminator")
