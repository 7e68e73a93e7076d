"""PyTorch-style convolutions in Keras: symmetric zero padding of `padding` on every side.

Keras' "same" padding puts the extra row/column at the end for even kernels and strided convs;
PyTorch pads `padding` on both sides. Where "same" pads exactly that (stride 1, odd kernel,
padding = dilation * (kernel - 1) / 2: every 3x3 conv of DeepLab-v2) the convolution pads
itself; elsewhere an explicit ZeroPadding2D precedes a "valid" convolution. Shapes and numbers
match PyTorch for every input size either way.
"""

import keras

from tfdaseg.models.stride_one_conv import StrideOneConv2D


def padded_conv(x, filters: int, kernel_size: int, name: str, strides: int = 1,
                dilation: int = 1, padding: int = 0, use_bias: bool = False):
  """A PyTorch-style convolution: symmetric zero padding, then the convolution.

  Args:
    x: Input tensor, NHWC.
    filters: Output channels.
    kernel_size: Square kernel size.
    name: Layer name (an explicit padding layer gets `name + "_pad"`).
    strides: Stride.
    dilation: Dilation rate.
    padding: Zeros added on every side, as PyTorch's `padding=`.
    use_bias: Whether the conv has a bias.

  Returns:
    The output tensor.
  """
  conv = StrideOneConv2D if strides == 1 else keras.layers.Conv2D
  mode = "valid"
  if padding and strides == 1 and kernel_size % 2 and padding == dilation * (kernel_size - 1) // 2:
    # "same" pads exactly these zeros here, inside the convolution kernel: no Pad op copying
    # the activation forward and slicing its gradient back.
    mode = "same"
  elif padding:
    x = keras.layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
  return conv(filters, kernel_size, strides=strides, dilation_rate=dilation, padding=mode,
              use_bias=use_bias, kernel_initializer="he_normal", name=name)(x)
