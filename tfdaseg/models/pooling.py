"""Max pooling with PyTorch's `ceil_mode=True` output size (the Caffe DeepLab ResNet stem)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfdaseg")
class CeilModeMaxPooling2D(keras.layers.Layer):
  """`torch.nn.MaxPool2d(pool_size, strides, padding, ceil_mode=True)` for NHWC inputs.

  PyTorch's ceil mode gives `ceil((n + 2 * padding - pool_size) / strides) + 1` outputs per axis.
  Padding `padding` before and `padding + strides - 1` after with -inf (so padded cells never win)
  and pooling "valid" (floor mode) gives exactly that size for every `n`, static or not.
  PyTorch also drops a last window that would start inside the right padding; with
  `padding + strides - 1 < pool_size` (checked) that window cannot occur, so no correction is
  needed.

  Args:
    pool_size: Window size (both axes).
    strides: Stride (both axes).
    padding: PyTorch's implicit padding (both axes, both sides).
    **kwargs: Base `keras.layers.Layer` arguments (name, dtype, ...).

  Example:
    >>> pool = CeilModeMaxPooling2D(pool_size=3, strides=2, padding=1)
    >>> tuple(pool(keras.ops.zeros((1, 33, 32, 4))).shape)
    (1, 17, 17, 4)
  """

  def __init__(self, pool_size: int = 3, strides: int = 2, padding: int = 1, **kwargs):
    super().__init__(**kwargs)
    if padding > pool_size // 2:
      raise ValueError(f"padding {padding} must be at most pool_size // 2 ({pool_size // 2}), "
                       "as PyTorch requires")
    if padding + strides - 1 >= pool_size:
      raise ValueError(f"pool_size={pool_size}, strides={strides}, padding={padding}: a ceil-mode "
                       "window could start inside the padding; not supported")
    self.pool_size = pool_size
    self.strides = strides
    self.padding = padding

  def call(self, inputs):
    before, after = self.padding, self.padding + self.strides - 1
    padded = ops.pad(inputs, [[0, 0], [before, after], [before, after], [0, 0]],
                     constant_values=float("-inf"))
    return ops.max_pool(padded, self.pool_size, self.strides, padding="valid")

  def compute_output_shape(self, input_shape):
    def size(n):
      if n is None:
        return None
      return -(-(n + 2 * self.padding - self.pool_size) // self.strides) + 1

    batch, height, width, channels = input_shape
    return (batch, size(height), size(width), channels)

  def get_config(self):
    config = super().get_config()
    config.update(pool_size=self.pool_size, strides=self.strides, padding=self.padding)
    return config
