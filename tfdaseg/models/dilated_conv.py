"""Dilated 2-D convolutions as one convolution kernel, where the device's kernels have dilation.

`tf.nn.convolution` (what Keras' `Conv2D` and `ops.conv` call) runs every dilated convolution as
space-to-batch, a convolution, then batch-to-space, because TensorFlow's generic CPU kernels have
no dilation. oneDNN's CPU kernels (on by default on x86) and cuDNN do, forward and backward, and
skip the two reshuffles: on this project's 2-core CPU a DeepLab-v2 ASPP branch at 512x512
(64x64x2048 -> 19, dilation 6) trains 1.6x faster, at dilation 24 5x (bench/train_step.py measures
the whole step). Where the kernels lack dilation (a CPU with oneDNN off, as `--deterministic`
sets) the layers fall back to `tf.nn.convolution`: the same numbers up to float summation order. So
does a dtype that oneDNN leaves to TensorFlow's own kernels on this CPU (float16 without
AVX512-FP16, e.g. on an AMD EPYC with AVX512-BF16: those kernels then refuse the dilation).

Only plain convolutions: oneDNN's depthwise backward kernels ignore dilation (their gradients
differ from space-to-batch's), so depthwise layers keep Keras' path.
"""

import functools

import keras
import tensorflow as tf
from keras import ops
# IsMklEnabled follows TF_ENABLE_ONEDNN_OPTS (the public API has no equivalent).
from tensorflow.python.util import _pywrap_util_port  # pylint: disable=g-direct-tensorflow-import


def native_dilation(inputs) -> bool:
  """Whether a dilated Conv2D on `inputs` can run as one kernel call.

  Args:
    inputs: The convolution's input (its device, where set, decides; then its dtype).

  Returns:
    True where the op lands on a GPU, or with oneDNN on where its kernels take the dtype.
  """
  device = getattr(inputs, "device", "") or ""
  if tf.config.list_logical_devices("GPU") and "CPU" not in device.upper():
    return True
  return bool(_pywrap_util_port.IsMklEnabled()) and _cpu_kernels_have_dilation(inputs.dtype.name)


@functools.cache
def _cpu_kernels_have_dilation(dtype: str) -> bool:
  """Whether a dilated convolution and both its gradients run on the CPU in `dtype`.

  oneDNN takes a dtype only where the CPU has its instructions (TensorFlow's mkl_util checks them);
  otherwise the graph keeps TensorFlow's own kernels, whose gradients have no dilation. A tiny
  graph, run once per dtype and process, asks the kernels themselves.
  """

  @tf.function
  def probe(x, kernel):
    y = tf.nn.conv2d(x, kernel, strides=1, padding="VALID", dilations=2)
    # tf.gradients, not a tape: init_scope (below) pauses tapes.
    return tf.gradients(y, [x, kernel])

  with tf.init_scope(), tf.device("CPU:0"):
    try:
      probe(tf.ones((1, 5, 5, 1), dtype), tf.ones((3, 3, 1, 1), dtype))
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
      return False
  return True


def dilated_conv2d(inputs, kernel, dilation_rate: int | tuple[int, int], padding: str = "valid"):
  """A stride-1 NHWC 2-D convolution at `dilation_rate`, one kernel call where supported.

  Args:
    inputs: [B, H, W, C_in].
    kernel: [kh, kw, C_in, C_out].
    dilation_rate: Dilation, one int or (rows, cols).
    padding: "valid" or "same".

  Returns:
    [B, H', W', C_out].
  """
  rates = (dilation_rate,) * 2 if isinstance(dilation_rate, int) else tuple(dilation_rate)
  if rates == (1, 1) or not native_dilation(inputs):
    return ops.conv(inputs, kernel, strides=1, padding=padding, dilation_rate=rates)
  return tf.nn.conv2d(inputs, ops.cast(kernel, inputs.dtype), strides=1, padding=padding.upper(),
                      dilations=rates)


@keras.saving.register_keras_serializable(package="tfdaseg")
class DilatedConv2D(keras.layers.Conv2D):
  """`keras.layers.Conv2D` whose stride-1 dilated convolution is one kernel call (`dilated_conv2d`).

  Same weights, config and checkpoints as `Conv2D`; channels-last only.
  """

  def convolution_op(self, inputs, kernel):
    if self.data_format != "channels_last" or tuple(self.strides) != (1, 1):
      return super().convolution_op(inputs, kernel)
    return dilated_conv2d(inputs, kernel, tuple(self.dilation_rate), self.padding)
