"""PyTorch-style convolutions in Keras: explicit symmetric padding, then a "valid" convolution.

Keras' "same" padding puts the extra row/column at the end for even kernels and strided convs;
PyTorch pads `padding` on both sides. Padding explicitly makes shapes and numbers match PyTorch
for every input size.
"""

import keras

from tfdaseg.models.dilated_conv import DilatedConv2D


def padded_conv(x, filters: int, kernel_size: int, name: str, strides: int = 1,
                dilation: int = 1, padding: int = 0, use_bias: bool = False):
  """A PyTorch-style convolution: explicit symmetric zero padding, then a "valid" Conv2D.

  Args:
    x: Input tensor, NHWC.
    filters: Output channels.
    kernel_size: Square kernel size.
    name: Layer name (the padding layer gets `name + "_pad"`).
    strides: Stride.
    dilation: Dilation rate.
    padding: Zeros added on every side, as PyTorch's `padding=`.
    use_bias: Whether the conv has a bias.

  Returns:
    The output tensor.
  """
  if padding:
    x = keras.layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
  conv = DilatedConv2D if dilation > 1 else keras.layers.Conv2D
  return conv(filters, kernel_size, strides=strides, dilation_rate=dilation, padding="valid",
              use_bias=use_bias, kernel_initializer="he_normal", name=name)(x)
